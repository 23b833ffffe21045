"""Names and defaults shared by every part of the engine (one place, no magic strings)."""

# --- common module options / environment ---------------------------------------------
DEFAULT_STATE_DIR = "/var/lib/cnm"
DEFAULT_RUN_DIR = "/run/cnm"
DEFAULT_NETNS_DIR = "/run/netns"
ENV_STATE_DIR = "CNM_STATE_DIR"
ENV_RUN_DIR = "CNM_RUN_DIR"
ENV_NETNS_DIR = "CNM_NETNS_DIR"
ENV_FIREWALL_BACKEND = "CNM_FIREWALL_BACKEND"
FIREWALL_BACKENDS = ("auto", "nftables", "iptables", "none")

# --- store ----------------------------------------------------------------------------
STORE_FILE = "cnm.db"
LOCK_FILE = "cnm.lock"
SCHEMA_VERSION = 1

# --- networks -------------------------------------------------------------------------
PREDEFINED_NETWORKS = ("host", "none")  # driver name == network name for both
NETWORK_NAME_MAX = 64
IFNAME_MAX = 15
BRIDGE_PREFIX = "br-"
HOST_VETH_PREFIX = "veth"
DEFAULT_MTU = 1500

# Docker driver option keys (com.docker.network.*)
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ENABLE_ICC = "com.docker.network.bridge.enable_icc"
OPT_ENABLE_IP_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_PARENT = "parent"
OPT_MACVLAN_MODE = "macvlan_mode"
OPT_IPVLAN_MODE = "ipvlan_mode"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
# The predefined default network (Docker's docker0): made on first use.
DEFAULT_BRIDGE_NETWORK = "bridge"
DEFAULT_BRIDGE_DEVICE = "cnm0"
DEFAULT_BRIDGE_OPTIONS = {OPT_DEFAULT_BRIDGE: "true", OPT_ENABLE_ICC: "true",
                          OPT_ENABLE_IP_MASQUERADE: "true", OPT_HOST_BINDING_IPV4: "0.0.0.0",
                          OPT_BRIDGE_NAME: DEFAULT_BRIDGE_DEVICE, OPT_MTU: "1500"}

# --- overlay networks (scope global, VXLAN between hosts) ---------------------------------
OVERLAY_DRIVER = "overlay"
# Drivers whose sandboxes hang off a Linux bridge by veth: firewalled, NATed, ports published.
BRIDGED_DRIVERS = ("bridge", OVERLAY_DRIVER)
OVERLAY_BRIDGE_PREFIX = "ov-"                 # + network id[:12]: the per-host bridge
OVERLAY_VXLAN_PREFIX = "vx-"                  # + network id[:12]: its VXLAN port
OPT_VXLANID_LIST = "com.docker.network.driver.overlay.vxlanid_list"
OPT_ENCRYPTED = "encrypted"                   # Docker's --opt encrypted
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50                           # outer IPv4 + UDP + VXLAN + inner Ethernet
ENV_CLUSTER_STORE = "CNM_CLUSTER_STORE"
ENV_ADVERTISE_ADDRESS = "CNM_ADVERTISE_ADDRESS"
AGENT_DIR = "agent"                           # under state_dir: installed agent code
AGENT_PACKAGE = "cnm_agent"                   # under AGENT_DIR: copy of the engine files it runs
AGENT_RUNNER = "cnm-agent.py"
AGENT_RUN_SUBDIR = "agent"                    # under run_dir: config, pidfile, log
AGENT_CONFIG_FILE = "config.json"
AGENT_PIDFILE = "agent.pid"
AGENT_LOGFILE = "agent.log"
AGENT_REMOTE_PREFIX = "~remote-"              # resolver files of endpoints on other hosts

# --- IPAM -----------------------------------------------------------------------------
# Docker's default local address pools: 172.17-31/16, then 192.168.0.0/16 in /20s.
DEFAULT_ADDRESS_POOLS = [*({"base": "172.%d.0.0/16" % n, "size": 16} for n in range(17, 32)),
                         {"base": "192.168.0.0/16", "size": 20}]
# IPv6 networks without an explicit subnet get a /64 from this ULA pool.
DEFAULT_ADDRESS_POOLS_V6 = [{"base": "fd63:6e6d::/48", "size": 64}]

# --- firewall (our own names: live beside Docker, podman, firewalld) ------------------
NFT_TABLE = "cnm"
NFT_FAMILY = "inet"
IPT_CHAIN_PREFIX = "CNM"
CHAIN_USER = "CNM-USER"

# --- DNS ------------------------------------------------------------------------------
DNS_LISTEN_ADDRESS = "127.0.0.11"
DNS_PORT = 53                                 # what sandboxes ask; redirected in each sandbox
DNS_REDIRECT_TABLE = "cnm-dns"                # nft table (ip) in each sandbox: :53 -> private ports
DNS_TTL = 600

# --- DNS (resolver) -------------------------------------------------------------------
DNS_RESOLVER_DIR = "resolver"                 # under state_dir: the installed daemon
DNS_RESOLVER_PACKAGE = "resolver"             # under DNS_RESOLVER_DIR: copy of dns/resolver/
DNS_RESOLVER_RUNNER = "cnm-resolver.py"       # under DNS_RESOLVER_DIR: what python runs
DNS_RESOLVER_LEGACY_SCRIPT = "cnm_resolver.py"  # the single-file daemon of older releases
DNS_RUN_SUBDIR = "dns"                        # under run_dir: config, pidfile, log
DNS_CONFIG_FILE = "config.json"
DNS_PIDFILE = "resolver.pid"
DNS_LOGFILE = "resolver.log"
DNS_CONFIG_VERSION = 1
DNS_FRAGMENTS_SUBDIR = "sandboxes"            # under run_dir/dns: <sandbox>.json per sandbox
DNS_CONTROL_SOCKET = "control.sock"           # under run_dir/dns: the resolver's control socket
DNS_CONTROL_TIMEOUT = 5.0                     # seconds for the resolver to apply an update
DNS_UPSTREAM_TIMEOUT = 1.0                    # seconds per upstream try
DNS_HOST_RESOLV_CONF = "/etc/resolv.conf"
DNS_SYSTEMD_UNIT = "cnm-resolver.service"
DNS_SYSTEMD_UNIT_DIR = "/etc/systemd/system"
DNS_SANDBOX_FILES_SUBDIR = "sandboxes"        # under run_dir: <name>/{hostname,hosts,resolv.conf}
DNS_ETC_NETNS_DIR = "/etc/netns"              # where `ip netns exec` looks (default netns_dir only)

# --- firewall (chains, sets and maps of our own; names shown by nft/iptables-save) ----
# nftables: everything lives in table NFT_FAMILY NFT_TABLE; per-network chains are
# "<prefix><network id[:12]>".
NFT_CHAIN_FORWARD = "forward"
NFT_CHAIN_PREROUTING = "prerouting"
NFT_CHAIN_OUTPUT = "output"
NFT_CHAIN_POSTROUTING = "postrouting"
NFT_CHAIN_RAW = "prerouting-raw"
NFT_NET_CHAIN_PREFIXES = ("fwd-out-", "fwd-in-", "post-", "raw-")
# iptables: chains in filter/nat/raw of both families, jumped to from the built-in ones.
IPT_CHAIN_FORWARD = "CNM-FORWARD"
IPT_CHAIN_PUBLISHED = "CNM-PUB"
IPT_CHAIN_ISOLATION = "CNM-ISOLATION"
IPT_CHAIN_DNAT = "CNM-DNAT"
IPT_CHAIN_POSTROUTING = "CNM-POSTROUTING"
IPT_CHAIN_RAW = "CNM-RAW"
IPT_NET_CHAIN_PREFIXES = ("CNM-FO-", "CNM-FI-", "CNM-PUB-", "CNM-DN-")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
# Ephemeral host ports come from this range (read per namespace; this is the fallback).
SYSCTL_PORT_RANGE = "net/ipv4/ip_local_port_range"
SYSCTL_RESERVED_PORTS = "net/ipv4/ip_local_reserved_ports"
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)

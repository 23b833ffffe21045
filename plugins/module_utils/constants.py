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

# --- IPAM -----------------------------------------------------------------------------
# Docker's default local address pools: 172.17-31/16, then 192.168.0.0/16 in /20s.
DEFAULT_ADDRESS_POOLS = (
    [{"base": "172.%d.0.0/16" % n, "size": 16} for n in range(17, 32)]
    + [{"base": "192.168.0.0/16", "size": 20}]
)
# IPv6 networks without an explicit subnet get a /64 from this ULA pool.
DEFAULT_ADDRESS_POOLS_V6 = [{"base": "fd63:6e6d::/48", "size": 64}]

# --- firewall (our own names: live beside Docker, podman, firewalld) ------------------
NFT_TABLE = "cnm"
NFT_FAMILY = "inet"
IPT_CHAIN_PREFIX = "CNM"
CHAIN_USER = "CNM-USER"

# --- DNS ------------------------------------------------------------------------------
DNS_LISTEN_ADDRESS = "127.0.0.11"
DNS_PORT = 53
DNS_TTL = 600

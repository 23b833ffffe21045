"""The kernel side of namespaces and links: rtnetlink spoken directly (``rtnl``), named
link operations per namespace (``links``), namespaces by path (``namespace``), sysctls
(``sysctl``)."""

"""The ``kea`` IPAM driver: oned's IPv4 address ranges served by ISC Kea's DHCPv4 server (subnets
and leases through its control agent) and named in PowerDNS (A and PTR records through its API).
Guests without OpenNebula's context packages get, over DHCP, exactly the address oned gave
their NIC."""

from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="ipam",
    name="kea",
    description="address ranges served by Kea DHCPv4, named in PowerDNS",
    actions={name: f"one_drivers.ipam.kea.actions:{name}"
             for name in ("register_address_range", "unregister_address_range", "get_address",
                          "allocate_address", "free_address")},
    defaults={
        "KEA_URL": ("http://127.0.0.1:8000/", "Kea's control agent (kea-ctrl-agent)"),
        "KEA_CREDENTIALS": ("", "a file holding the control agent's user:password (basic "
                                "authentication), owned by root; empty: none"),
        "KEA_TIMEOUT": ("5", "seconds one Kea command may take"),
        "KEA_INTERFACE": ("", "the interface Kea serves the subnets on (a subnet's 'interface'); "
                              "empty: Kea selects the subnet by the address it receives on"),
        "LEASE_LIFETIME": ("4294967295", "seconds a lease lasts (default: infinite, the address "
                                         "is the NIC's as long as oned leases it)"),
        "PDNS_URL": ("http://127.0.0.1:8081", "PowerDNS's API (its webserver)"),
        "PDNS_SERVER": ("localhost", "PowerDNS's server id in the API"),
        "PDNS_API_KEY_FILE": ("/etc/one/ipam/kea/pdns-api-key",
                              "a file holding PowerDNS's API key, owned by root"),
        "PDNS_TIMEOUT": ("5", "seconds one PowerDNS request may take"),
        "DNS_ZONES": ("", "the zones (forward and in-addr.arpa) an AR's DNS_ZONE may name and "
                          "records may be written to, space-separated; empty: no DNS"),
        "DNS_TTL": ("300", "TTL of the records"),
        "HOSTNAME_PREFIX": ("one-", "an address's name: <prefix><a-b-c-d>.<DNS_ZONE>"),
        "STATE_DIR": ("~/.one-drivers/ipam", "the driver user's private directory (its lock)"),
        "ACTION_TIMEOUT": ("30", "seconds an IPAM call may take in total (oned waits 90)"),
    },
    # an AR's attributes are its vnet owner's to update: these only oneadmin may change
    restricted={"VNET_RESTRICTED_ATTR": ["AR/KEA_SUBNET_ID", "AR/DNS_ZONE"]},
)

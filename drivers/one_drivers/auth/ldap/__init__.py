"""The ``ldap`` authentication driver on ldap3: upstream's ``ldap_auth.conf`` (servers in order,
availability groups, ``match_user_regex``, group mapping through GROUP_DN of OpenNebula's
groups), with failover inside one deadline, TLS verified by default, nested groups, filter
values escaped, and group-admin rights granted in OpenNebula kept."""

from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="auth",
    name="ldap",
    description="LDAP / Active Directory logins (ldap3)",
    actions={"authenticate": "one_drivers.auth.ldap.authenticate:authenticate"},
    defaults={
        "CONFIG": ("/etc/one/auth/ldap_auth.conf", "upstream's ldap_auth.conf (YAML)"),
        "MAPPING_DIR": ("~/.one-drivers/auth", "where generated group mapping files are kept "
                                               "(private to the driver's user)"),
        "ONED_TIMEOUT": ("10", "seconds oned may take to list groups and users"),
        "ACTION_TIMEOUT": ("30", "seconds a login may take in total, every server included"),
        "AGENT_IDLE": ("300", "seconds the login agent (ldap3 kept loaded; see README) waits "
                              "for the next login before it exits; 0: no agent"),
    },
    oned_conf={"PASSWORD_CHANGE": "YES", "PASSWORD_REQUIRED": "NO",
               "DRIVER_MANAGED_GROUPS": "YES", "DRIVER_MANAGED_GROUP_ADMIN": "YES",
               "MAX_TOKEN_TIME": "86400"},
)

"""The ``oidc`` authentication driver: single sign-on with the identity provider's JWTs.

SECRET is an ID or access token; it is verified offline against the issuer's keys (JWKS, from
its discovery document, cached on disk, fetched again on an unknown key id at most every
JWKS_MIN_REFRESH seconds): algorithm from an allow-list (never ``none``, no shared-secret HS*),
``iss``, ``aud``, ``exp``/``nbf`` with LEEWAY seconds of skew; the user name from
USERNAME_CLAIM must be the name logging in; groups from GROUPS_CLAIM through GROUP_MAPPING.
``one-drivers auth oidc-login`` gets a token with the device authorization flow and writes
ONE_AUTH, so the CLI and API sign on too.
"""

from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="auth",
    name="oidc",
    description="OpenID Connect single sign-on (JWTs verified offline against the IdP's JWKS)",
    actions={"authenticate": "one_drivers.auth.oidc.authenticate:authenticate"},
    defaults={
        "ISSUER": ("", "the identity provider's issuer URL (https://...); its discovery "
                       "document is ISSUER/.well-known/openid-configuration"),
        "AUDIENCE": ("", "the audience tokens must carry (the client id OpenNebula is "
                         "registered as)"),
        "ALGORITHMS": ("RS256 ES256 PS256", "signature algorithms accepted (asymmetric only)"),
        "USERNAME_CLAIM": ("preferred_username", "the claim holding the OpenNebula user name"),
        "GROUPS_CLAIM": ("groups", "the claim listing the user's IdP groups"),
        "GROUP_MAPPING": ("", "a YAML or JSON file: IdP group -> OpenNebula group id "
                              "(\"*<id>\" for group admin)"),
        "DEFAULT_GROUP": ("", "group id of users with no mapped group (empty: refused)"),
        "LEEWAY": ("60", "seconds of clock skew allowed on exp, nbf and iat"),
        "CA_FILE": ("", "CA bundle for the IdP's https (default: the system's)"),
        "JWKS_DIR": ("~/.one-drivers/auth", "where the IdP's keys are cached (private to "
                                            "the driver's user)"),
        "JWKS_MIN_REFRESH": ("60", "seconds between two fetches of the keys (an unknown key "
                                   "id cannot make every login call the IdP)"),
        "IDP_TIMEOUT": ("5", "seconds the IdP may take to answer"),
        "ACTION_TIMEOUT": ("20", "seconds a login may take in total"),
    },
    oned_conf={"PASSWORD_CHANGE": "NO", "PASSWORD_REQUIRED": "NO",
               "DRIVER_MANAGED_GROUPS": "YES", "DRIVER_MANAGED_GROUP_ADMIN": "YES",
               "MAX_TOKEN_TIME": "3600"},
)

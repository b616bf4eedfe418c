"""The resource table and scopes the end-to-end tests protect (ids from the development AS seed)."""

RESOURCES = [
    {"id": "res-alice", "uri": "/alice"},
    {"id": "res-alice-docs", "uri": "/alice/docs"},
    {"id": "res-bob", "uri": "/bob"},
]
ALL_SCOPES = ["protected_get", "protected_head", "protected_post", "protected_put",
              "protected_patch", "protected_delete"]
METHOD_SCOPES = {"GET": "protected_get", "HEAD": "protected_head", "POST": "protected_post",
                 "PUT": "protected_put", "PATCH": "protected_patch", "DELETE": "protected_delete"}

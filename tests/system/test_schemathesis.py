"""Property-based run of the management API against its own OpenAPI document
(schemathesis): no 5xx, and every response matches what the document says."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import factories
from xtag.extensions import db
from xtag.models import ApiToken

EXAMPLES = 15
# No 5xx; every status code, content type and body as documented. (Not
# "positive data accepted": a schema cannot say which credentials fields an
# auth_type needs, and the API rightly answers 400 to incomplete ones.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_conforms_to_its_openapi_document(app, ctx):
    user = factories.user("fuzz@example.com", role="admin")
    row, token = ApiToken.issue(user)
    db.session.add(row)
    db.session.commit()
    factories.mapping(factories.site(), "Order Completed")  # something to read, change and delete
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [
        result.ok() for result in schema.include(path_regex="^/api/").get_all_operations()
    ]
    assert len(operations) >= 25

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        conforms()

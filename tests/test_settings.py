"""The settings registry: defaults, environment parsing, errors, and the README lists them all."""
from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.errors import CdsConfigError
from cds_service.runtime.settings import SANDBOX_ISSUER, SANDBOX_JWKS, load_settings, registry

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_defaults_trust_the_public_sandbox_and_verify_tokens():
    settings = load_settings({})
    assert settings.auth is True
    assert settings.trusted_issuers == {SANDBOX_ISSUER: SANDBOX_JWKS}
    assert settings.allowed_fhir_servers == ()


def test_environment_strings_are_parsed():
    settings = load_settings({"SPINE_CDS_AUTH": "off", "SPINE_CDS_ALLOWED_FHIR_SERVERS": "http://a:8080/fhir/, http://b/fhir",
                              "SPINE_CDS_TRUSTED_ISSUERS": '{"https://ehr.test": "https://ehr.test/jwks.json"}',
                              "SPINE_CDS_FHIR_TIMEOUT_S": "1.5"})
    assert settings.auth is False and settings.fhir_timeout_s == 1.5
    assert settings.allowed_fhir_servers == ("http://a:8080/fhir", "http://b/fhir")
    assert settings.trusted_issuers == {"https://ehr.test": "https://ehr.test/jwks.json"}


@pytest.mark.parametrize("name,value", [("SPINE_CDS_AUTH", "maybe"), ("SPINE_CDS_TRUSTED_ISSUERS", "[1]"),
                                        ("SPINE_CDS_TRUSTED_ISSUERS", '{"x": "ftp://y"}'),
                                        ("SPINE_CDS_FHIR_TIMEOUT_S", "-1"), ("SPINE_CDS_FHIR_MAX_PAGES", "many")])
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(CdsConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize("field", registry(), ids=lambda f: f.metadata["env"])
def test_every_setting_is_in_the_readme_with_help(field):
    assert field.metadata["help"]
    assert f"`{field.metadata['env']}`" in README


def test_auth_off_logs_a_warning(make_app, caplog):
    make_app(SPINE_CDS_AUTH="off")
    assert any("NOT verified" in r.getMessage() for r in caplog.records)

import logging

import pytest

from harness import redact
from harness.usercreds import UsercredsError, parse_usercreds

SAMPLE = """HELIX_API_KEY=hl-abcdefghijklmnop1234
HELIX_URL=http://localhost:8080
HELIX_UBUNTU_AGENT=app_01jabc
HELIX_PROJECT=prj_01jxyz
"""


def test_parses_the_real_format_and_hides_the_key():
    creds = parse_usercreds(SAMPLE)
    assert creds.url == "http://localhost:8080" and creds.project == "prj_01jxyz" and creds.agent == "app_01jabc"
    assert "hl-abcdefghijklmnop1234" not in repr(creds)
    assert redact.redact("token hl-abcdefghijklmnop1234 here") == "token *** here"


def test_missing_keys_and_bad_lines_never_echo_values():
    with pytest.raises(UsercredsError, match="HELIX_PROJECT") as err:
        parse_usercreds("HELIX_API_KEY=hl-secretsecret99\nHELIX_URL=x\n")
    assert "secretsecret99" not in str(err.value)
    with pytest.raises(UsercredsError, match=":2: expected KEY=value") as err:
        parse_usercreds("HELIX_URL=x\nthis line has hl-zzzzzzzzzz9 no equals\n")
    assert "zzzzzzzz" not in str(err.value)
    with pytest.raises(UsercredsError, match="runner token"):
        parse_usercreds(SAMPLE.replace("hl-abcdefghijklmnop1234", "oh-hallo-insecure-token"))


def test_logging_filter_redacts_registered_secrets(caplog):
    redact.register("s3cr3t-value-xyz")
    redact.install_logging_filter()
    logger = logging.getLogger("harness.test.redact")
    with caplog.at_level(logging.INFO, logger="harness.test.redact"):
        logger.info("connecting with %s and Bearer abcdefgh12345", "s3cr3t-value-xyz")
    assert "s3cr3t" not in caplog.text and "abcdefgh12345" not in caplog.text

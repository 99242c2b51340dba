"""serve-api settings: the CINETRON_* environment contract with deploy/, and flag overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinetron.api.config import ServerConfig, from_args

CONTRACT = {
    "CINETRON_API_ADDRESS": "0.0.0.0:50051",
    "CINETRON_TRITON_URL": "cinetron-triton:8001",
    "CINETRON_DATA_DIR": "/var/lib/cinetron",
    "CINETRON_AUTH_TOKENS_FILE": "/etc/cinetron/auth/tokens",
    "CINETRON_TLS_CERT": "/etc/tls/tls.crt",
    "CINETRON_TLS_KEY": "/etc/tls/tls.key",
    "CINETRON_METRICS_PORT": "9464",
    "CINETRON_MAX_QUEUE": "16",
    "CINETRON_MAX_CONCURRENCY": "4",
    "CINETRON_HTTP_ADDRESS": "0.0.0.0:8080",
}


def test_every_contract_variable_is_read():
    c = from_args([], CONTRACT)
    assert c == ServerConfig(
        address="0.0.0.0:50051",
        http_address="0.0.0.0:8080",
        triton_url="cinetron-triton:8001",
        data_dir=Path("/var/lib/cinetron"),
        auth_tokens_file=Path("/etc/cinetron/auth/tokens"),
        tls_cert=Path("/etc/tls/tls.crt"),
        tls_key=Path("/etc/tls/tls.key"),
        metrics_port=9464,
        max_queue=16,
        max_concurrency=4,
    )
    assert c.auth_enabled and c.host == "0.0.0.0"


def test_defaults_listen_on_loopback_with_auth_and_tls_off():
    c = from_args([], {})
    assert c.address == "127.0.0.1:50051" and c.triton_url == "127.0.0.1:8001"
    assert c.data_dir == Path(".cinetron-data") and not c.auth_enabled and c.tls_cert is None
    assert (c.metrics_port, c.max_queue, c.max_concurrency) == (9464, 16, 4)
    assert c.http_address == "127.0.0.1:8080" and c.http_host_port == ("127.0.0.1", 8080)


@pytest.mark.parametrize("off", ["0", "", " "])
def test_http_address_zero_or_empty_turns_the_http_side_off(off):
    c = from_args([], {"CINETRON_HTTP_ADDRESS": off})
    assert c.http_address == "" and c.http_host_port is None
    assert from_args(["--http-address", off], {}).http_host_port is None


def test_http_address_flag_overrides_the_environment_and_takes_ipv6():
    c = from_args(["--http-address", "[::1]:9090"], {"CINETRON_HTTP_ADDRESS": "0.0.0.0:8080"})
    assert c.http_host_port == ("::1", 9090)


def test_flags_override_the_environment():
    c = from_args(["--max-queue", "3", "--address", "[::1]:6000", "--local", "torch"], CONTRACT)
    assert c.max_queue == 3 and c.address == "[::1]:6000" and c.host == "::1"
    assert c.local == "torch"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CINETRON_MAX_CONCURRENCY": "0"}, "--max-concurrency must be between 1 and 1024, got 0"),
        ({"CINETRON_MAX_QUEUE": "many"}, "--max-queue must be an integer"),
        ({"CINETRON_METRICS_PORT": "70000"}, "--metrics-port must be between 0 and 65535"),
        ({"CINETRON_TLS_CERT": "/a.crt"}, "TLS needs both"),
        ({"CINETRON_HTTP_ADDRESS": "8080"}, "--http-address must be HOST:PORT"),
        ({"CINETRON_HTTP_ADDRESS": "localhost:http"}, "--http-address must be HOST:PORT"),
    ],
)
def test_bad_settings_exit_with_a_message(env, message):
    with pytest.raises(SystemExit) as info:
        from_args([], env)
    assert message in str(info.value)


def test_extra_tokens_variable_turns_auth_on():
    c = from_args([], {"CINETRON_AUTH_TOKENS": "a, b,"})
    assert c.auth_tokens == ("a", "b") and c.auth_enabled


def test_tokens_file_is_reread_when_it_changes(tmp_path):
    import os

    from cinetron.api.auth import TokenSet, bearer_token

    path = tmp_path / "tokens"
    path.write_text("old-token\n# a comment\n")
    tokens = TokenSet(path)
    assert tokens.accepts("old-token") and not tokens.accepts("# a comment")
    path.write_text("new-token\n")
    os.utime(path, (1, 1))  # a different mtime, as a real rotation would give
    assert tokens.accepts("new-token") and not tokens.accepts("old-token")
    assert not tokens.accepts("")
    assert bearer_token((("authorization", "Bearer new-token"),)) == "new-token"
    assert bearer_token((("authorization", "Basic abc"),)) == ""

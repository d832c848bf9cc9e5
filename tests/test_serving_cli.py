"""`cli.py serve` passes the service's limits through (trusted hosts, queues, connections)."""

from unittest import mock

from click.testing import CliRunner

from keras_sns.cli import main


def test_serve_options_reach_the_service_settings(tmp_path):
    with mock.patch("serving.run") as run:
        result = CliRunner().invoke(main, [
            "serve", "--base-dir", str(tmp_path), "--allowed-hosts", "models.example, 10.0.0.5",
            "--max-queue", "3", "--max-report-queue", "2", "--max-connections", "9"])
    assert result.exit_code == 0, result.output
    settings = run.call_args.kwargs["settings"]
    assert settings.allowed_hosts == ("models.example", "10.0.0.5")
    assert (settings.max_queue, settings.max_report_queue, settings.max_connections) == (3, 2, 9)
    assert run.call_args.kwargs["host"] == "127.0.0.1"  # loopback unless asked


def test_serve_rejects_bad_limits_with_a_message():
    result = CliRunner().invoke(main, ["serve", "--base-dir", ".", "--max-queue", "0"])
    assert result.exit_code != 0 and "--max-queue" in result.output
    assert "Traceback" not in result.output

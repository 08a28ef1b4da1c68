"""TofuflowDriftSensor against real drift: a file changed outside tofuflow (pyvider)."""

from __future__ import annotations

from _airflow_harness import E2E_DAGS, Airflow, wait_for

from _services.pyvider import Pyvider


def test_the_drift_sensor_waits_deferred_until_the_file_drifts(
    airflow: Airflow, pyvider: Pyvider
) -> None:
    proc = airflow.start(
        E2E_DAGS / "tofuflow_e2e_drift.py", "tofuflow_e2e_drift", dict([pyvider.cli_config_env])
    )
    log = airflow.logs / "tofuflow_e2e_drift.log"
    motd = airflow.files / "drift" / "motd.txt"
    wait_for(
        lambda: (
            "no drift in examples/e2e-drift" in log.read_text(errors="replace")
            or proc.poll() is not None
        ),
        300,
        "the first poke to find no drift",
    )
    assert motd.read_text() == "hello from tofuflow\n"
    motd.write_text("edited by hand\n")  # out of band, while the sensor is deferred
    run = airflow.finish(proc, "tofuflow_e2e_drift", timeout=300)
    assert run.state == "success", run.log[-5000:]
    assert run.xcom("drift") == {
        "workspace": "examples/e2e-drift",
        "drift": True,
        "resources": ["pyvider_file_content.motd"],
    }
    assert "running trigger in line" in run.log  # it waited in the triggerer between pokes
    assert "drift in examples/e2e-drift: pyvider_file_content.motd" in run.log
    assert motd.read_text() == "edited by hand\n"  # a sensor only looks

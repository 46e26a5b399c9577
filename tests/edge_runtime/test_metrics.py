"""Metrics: percentiles, Prometheus text over HTTP, JSON lines from the serve loop."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
from edge_helpers import LinearPolicy, hello

from factoryfloor.edge_runtime import serve as serve_module
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.metrics import LatencyStats, Metrics, MetricsHttpServer
from factoryfloor.edge_runtime.server import ServerConfig


def test_latency_percentiles_in_microseconds():
    stats = LatencyStats()
    for us in range(1, 1001):
        stats.add(us * 1e-6)
    summary = stats.summary_us()
    assert summary["count"] == 1000 and summary["max"] == 1000.0
    assert summary["p50"] == pytest.approx(500.5, abs=0.1)
    assert summary["p99"] == pytest.approx(990.0, abs=0.1)


def test_prometheus_text_is_served_on_localhost():
    metrics = Metrics("server")
    metrics.count("actions_sent", 7)
    metrics.set_gauge("sessions", 2)
    metrics.observe("inference", 250e-6)
    http = MetricsHttpServer([metrics], 0).start()
    try:
        url = f"http://127.0.0.1:{http.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        http.close()
    assert "factoryfloor_server_actions_sent_total 7" in text
    assert "factoryfloor_server_sessions 2" in text
    assert 'factoryfloor_server_inference_seconds{quantile="0.5"} 0.000250000' in text


def test_serve_writes_json_lines_and_serves_metrics(tmp_path, monkeypatch):
    captured = {}
    real = serve_module.make_server

    def spy(*args):
        captured["server"], security = real(*args)
        return captured["server"], security

    monkeypatch.setattr(serve_module, "make_server", spy)
    jsonl = tmp_path / "metrics.jsonl"
    options = serve_module.ServeOptions(metrics_jsonl=jsonl, report_every_s=0.2, metrics_port=0)
    config = ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10)
    thread = threading.Thread(target=serve_module.serve, args=(LinearPolicy(), config, options))
    thread.start()
    while "server" not in captured:
        time.sleep(0.01)
    client = EdgeClient(captured["server"].endpoint)
    client.handshake(hello())
    for _ in range(20):
        client.send_observation(np.ones(6, np.float32))
        assert client.receive_action(1.0) is not None
    time.sleep(0.5)
    captured["server"].stop_event.set()
    thread.join(5)
    client.close()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) >= 2
    last = records[-1]
    assert last["counters"]["actions_sent"] == 20
    assert last["latency_us"]["inference"]["count"] == 20
    assert 0 < last["gauges"]["resident_memory_mb"] < 1000

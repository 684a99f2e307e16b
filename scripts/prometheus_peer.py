#!/usr/bin/env python3
"""A Prometheus peer for Concierge's tests, built on PyPI's prometheus_client (not our code).

  prometheus_peer.py write text|openmetrics [--utf8] FILE   the registry's exposition, as the library writes it
  prometheus_peer.py serve PORT [--utf8]                    serve it on 127.0.0.1:PORT/metrics (the library's
                                                            own HTTP handler: OpenMetrics when asked, else text)
  prometheus_peer.py parse text|openmetrics FILE            print every sample the library's own parser reads,
                                                            as JSON lines [name, {labels}, value, timestamp, type]
                                                            (numbers as Python repr() text)

The registry holds every metric type, label values that need escaping, NaN and +Inf values, a
sample with a timestamp, and (with --utf8) dotted metric and label names that need quoting.
"""
import json
import math
import sys
import time

from prometheus_client import (CollectorRegistry, Counter, Enum, Gauge, Histogram, Info,
                               Summary)
from prometheus_client.core import (GaugeHistogramMetricFamily, SummaryMetricFamily,
                                    UnknownMetricFamily, GaugeMetricFamily)
from prometheus_client import exposition
from prometheus_client.openmetrics import exposition as om_exposition


class Extra:
    """Families the client's instrument classes do not make: quantile summaries, gauge
    histograms, unknown, and samples with timestamps."""

    def __init__(self, utf8):
        self.utf8 = utf8

    def collect(self):
        s = SummaryMetricFamily("rpc_latency_seconds", "RPC latency with client-side quantiles.",
                                labels=["service"])
        s.add_metric(["auth"], count_value=42, sum_value=8.25)
        yield s
        # The quantile samples themselves, as a library with quantiles exposes them.
        q = SummaryMetricFamily("job_duration_seconds", "Job duration quantiles.", labels=["task"])
        q.add_metric(["nightly"], count_value=7, sum_value=70.5)
        q.samples.extend([
            type(q.samples[0])("job_duration_seconds", {"task": "nightly", "quantile": "0.5"}, 9.5, None, None),
            type(q.samples[0])("job_duration_seconds", {"task": "nightly", "quantile": "0.99"}, 18.0, None, None),
            type(q.samples[0])("job_duration_seconds", {"task": "idle", "quantile": "0.5"}, math.nan, None, None),
        ])
        yield q
        g = GaugeHistogramMetricFamily("queue_wait_seconds", "Time items have waited in the queue.",
                                       labels=["queue"])
        g.add_metric(["mail"], buckets=[("0.1", 3), ("1.0", 7), ("+Inf", 9)], gsum_value=4.5)
        yield g
        u = UnknownMetricFamily("legacy_thing", "A metric of no declared type.", labels=["kind"])
        u.add_metric(["a"], 12.5)
        u.add_metric(["b"], -3)
        yield u
        t = GaugeMetricFamily("last_seen_temperature_celsius", "A reading with its own timestamp.",
                              labels=["sensor"])
        # A minute old: Zabbix stores no value older than the item's history period.
        t.add_metric(["roof"], 21.25, timestamp=int(time.time()) - 60 + 0.125)
        t.add_metric(["cellar"], math.inf)
        yield t
        if self.utf8:
            d = GaugeMetricFamily("app.dotted.metric", "A dotted UTF-8 name.", labels=["zone.name"])
            d.add_metric(["eu-1"], 3)
            yield d


def registry(utf8=False):
    r = CollectorRegistry()
    c = Counter("http_requests", "HTTP requests served.", ["method", "code"], registry=r)
    c.labels("GET", "200").inc(1027)
    c.labels("POST", "500").inc(3)
    tricky = Counter("odd_label_values", "Label values that need escaping.", ["path"], registry=r)
    tricky.labels('C:\\DIR\\FILE.TXT').inc(2)
    tricky.labels('say "hi"\nnext line').inc(5)
    tricky.labels("ünïcode, comma ] bracket").inc(7)
    Counter("bytes_sent_bytes", "Bytes sent.", registry=r).inc(123456789)
    g = Gauge("temperature_celsius", "Current temperature.", ["room"], registry=r)
    g.labels("kitchen").set(21.5)
    g.labels("attic").set(-3.75e-7)
    Gauge("not_a_number", "A gauge that is NaN.", registry=r).set(math.nan)
    Gauge("big_value", "A huge gauge.", registry=r).set(1.5e300)
    h = Histogram("request_duration_seconds", "Request duration.", ["route"],
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r)
    for i, v in enumerate([0.003, 0.007, 0.02, 0.04, 0.04, 0.09, 0.2, 0.3, 0.7, 0.9, 1.7, 3.0]):
        h.labels("/api").observe(v)
        if i % 3 == 0:
            h.labels("/health").observe(v / 10)
    Histogram("empty_histogram_seconds", "A histogram without observations.", registry=r)
    s = Summary("payload_size_bytes", "Payload sizes.", registry=r)
    for v in (100, 250, 4000):
        s.observe(v)
    Info("build", "Build information.", registry=r).info({"version": "1.2.3", "revision": "abc"})
    e = Enum("task_state", "Task state.", states=["starting", "running", "stopped"], registry=r)
    e.state("running")
    r.register(Extra(utf8))
    return r


def write(fmt, path, utf8):
    r = registry(utf8)
    escaping = "allow-utf-8" if utf8 else "underscores"
    if fmt == "text":
        data = exposition.generate_latest(r, escaping=escaping)
    else:
        data = om_exposition.generate_latest(r, escaping=escaping)
    with open(path, "wb") as f:
        f.write(data)


def serve(port, utf8):
    from http.server import HTTPServer
    r = registry(utf8)
    handler = exposition.MetricsHandler.factory(r)
    HTTPServer(("127.0.0.1", port), handler).serve_forever()


def parse(fmt, path):
    text = open(path, encoding="utf-8").read()
    if fmt == "text":
        from prometheus_client.parser import text_string_to_metric_families
    else:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            ts = s.timestamp
            if ts is not None and not isinstance(ts, (int, float)):
                ts = ts.sec + ts.nsec / 1e9
            # Numbers as repr() text: exact, whatever the reader's JSON float parsing.
            print(json.dumps([s.name, s.labels, repr(float(s.value)),
                              None if ts is None else repr(float(ts)), family.type]))


def main(argv):
    utf8 = "--utf8" in argv
    argv = [a for a in argv if a != "--utf8"]
    if len(argv) == 3 and argv[0] == "write" and argv[1] in ("text", "openmetrics"):
        write(argv[1], argv[2], utf8)
    elif len(argv) == 2 and argv[0] == "serve":
        serve(int(argv[1]), utf8)
    elif len(argv) == 3 and argv[0] == "parse" and argv[1] in ("text", "openmetrics"):
        parse(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Python 3 port of the talk's concierge_courier.py (the baseline of `make bench`).

Ported from the talk's slides ("CONCIERGE_COURIER.PY", "MANIFEST COLLECTION", "ITEM DELIVERY"):
get_timers() writes a zabbix_sender input file of `- timer[{name}.{stat}] {value}` lines and
send_metrics() runs `zabbix_sender -c CONF -i FILE >/dev/null` through a shell with
subprocess.call, then prints the elapsed seconds; discover_timers() prints the LLD JSON.

Changes from the slides, each the smallest one that lets the port run against the lab and be
compared value for value with concierge-courier:
  * the document is fetched from the URL given on the command line with urllib (the slides read
    /tmp/metrics.json "just for testing purposes", while the item key passes the URL);
  * get_timers writes only the 11 statistics that have item prototypes (count, max, mean,
    mean_rate, min, p75, p95, p98, p99, p999, stddev); the slides write all 17 fields of each
    timer, and the 6 without items (p50, m1/m5/m15_rate, duration_units, rate_units) would only
    be refused by the server, making zabbix_sender exit 2 on every run;
  * discover_timers emits the macro as "{#TIMER}" (the slides have "#TIMER", which Zabbix rejects);
  * print() instead of the Python 2 print statement;
  * the agent config and the sender file live where the environment says (CONCIERGE_TALK_CONF,
    CONCIERGE_TALK_DIR) instead of /etc/coproceses/... and /tmp, so runs never collide;
  * the process exits with zabbix_sender's status (the slides discard it), so the bench can
    check that every measured run really delivered.
"""
import json
import os
import sys
import time
from subprocess import call
from urllib.request import urlopen

startTime = time.time()

AGENT_CONF = os.environ.get("CONCIERGE_TALK_CONF", "/etc/coproceses/zabbix/zabbix_agentd.conf")
SENDER_DIR = os.environ.get("CONCIERGE_TALK_DIR", "/tmp")
STATS = ("count", "max", "mean", "mean_rate", "min", "p75", "p95", "p98", "p99", "p999", "stddev")


def read_metrics(url):
    with urlopen(url, timeout=10) as response:
        return response.read()


def discover_timers(url):
    """
    Output Zabbix formatted JSON of keys
    """
    keys = read_metrics(url)
    keys_json = json.loads(keys)

    discovery_data_dict = \
        {'data': [{"{#TIMER}": key} for key in keys_json['timers']]}
    print(json.dumps(discovery_data_dict))
    return 0


def get_timers(url):
    keys = read_metrics(url)
    keys = json.loads(keys)
    with open(os.path.join(SENDER_DIR, "timer_metrics_zabbix.sender"), "w") as sender_file:
        for timer_name, metrics in keys['timers'].items():
            for metric_name, metric_value in metrics.items():
                if metric_name in STATS:
                    sender_file.write("- timer[{0}.{1}] {2}\n"
                                      .format(timer_name, metric_name, metric_value))
    return send_metrics("timer")


def send_metrics(metric_type):
    filename = os.path.join(SENDER_DIR, metric_type + "_metrics_zabbix.sender")
    status = call("zabbix_sender -c " + AGENT_CONF + " -i "
                  + filename + " >/dev/null", shell=True)
    print(time.time() - startTime)
    return status


if __name__ == "__main__":
    commands = {"discover_timers": discover_timers, "get_timers": get_timers}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit("usage: concierge_courier.py discover_timers|get_timers URL")
    sys.exit(commands[sys.argv[1]](sys.argv[2]))

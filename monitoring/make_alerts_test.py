#!/usr/bin/env python3
# Writes monitoring/alerts_test.yml (the promtool unit tests of monitoring/alerts.yml):
# run from the top of the tree after changing a rule or an annotation:
#   python3 monitoring/make_alerts_test.py && promtool test rules monitoring/alerts_test.yml
# Needs PyYAML (Debian: python3-yaml); not run by test/check, which only runs promtool.
import yaml, re
rules = {r['alert']: r for r in yaml.safe_load(open('monitoring/alerts.yml'))['groups'][0]['rules']}
I = {'instance': 'db:9187', 'job': 'postgres'}
def lab(**kw):
    d = dict(I); d.update(kw); return d
def sel(name, **kw):
    d = lab(**kw)
    return name + '{' + ', '.join(f'{k}="{v}"' for k, v in d.items()) + '}'
def ann(alert, labels):
    out = {}
    for k, v in rules[alert]['annotations'].items():
        out[k] = re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels[m.group(1)], v)
    return out
def exp(alert, **kw):
    l = lab(**kw); l['severity'] = rules[alert]['labels']['severity']
    return {'exp_labels': l, 'exp_annotations': ann(alert, lab(**kw))}

MB = 1024 * 1024
GB = 1024 * MB
# Two targets: "local" (the database dfe_airbyte is installed in) and a
# remote service database "svc_a"; every per-service series carries its target.
TARGETS = ['local', 'svc_a']
SLOT = dict(target='local', slot_name='airbyte_slot')
REMOTE_SLOT = dict(target='svc_a', slot_name='airbyte_slot')
LOCAL = dict(target='local')
REMOTE = dict(target='svc_a')
STATUSES = ['ok', 'inactive', 'warning', 'critical', 'lost', 'restored', 'idle_timeout', 'unreachable']

def day_series(points, over=None):
    """A normal day, every 5 minutes: a 15-minute sync schedule (retained WAL
    climbs 100 -> 200 -> 300 MB of a 2 GB limit and drops when the next sync confirms), every
    sync succeeds, one worker, nothing failed.  over: name -> values overrides."""
    teeth = points // 3 + 1
    tooth = f'{100*MB} {200*MB} {300*MB}'
    s = {}
    for t in TARGETS:
        slot = dict(target=t, slot_name='airbyte_slot')
        s.update({
            sel('dfe_airbyte_slot_retained_bytes', **slot): ' '.join([tooth] * teeth),
            sel('dfe_airbyte_slot_limit_bytes', **slot): f'{2*GB}x{points}',
            sel('dfe_airbyte_slot_status_code', **slot): f'0x{points}',
            sel('dfe_airbyte_sync_stale', target=t): f'0x{points}',
            sel('dfe_airbyte_sync_connection_disabled', target=t): f'0x{points}',
            sel('dfe_airbyte_last_deploy_failed', target=t): f'0x{points}',
            sel('dfe_airbyte_policy_tags_failures_last_hour', target=t): f'0x{points}',
            sel('dfe_airbyte_reconcile_mismatch', target=t, table_name='applications'): f'0x{points}',
            sel('dfe_airbyte_target_reachable', target=t): f'1x{points}',
        })
        for st in STATUSES:
            s[sel('dfe_airbyte_slot_status_is', status=st, **slot)] = f'{1 if st == "ok" else 0}x{points}'
    s.update({
        sel('dfe_airbyte_workers_running'): f'1x{points}',
        sel('dfe_airbyte_workers_types_running'): f'1x{points}',
        sel('dfe_airbyte_worker_running', backend_type='dfe_airbyte worker'): f'1x{points}',
        sel('dfe_airbyte_worker_uptime_seconds', backend_type='dfe_airbyte worker'): f'86400+300x{points}',
    })
    for k, v in (over or {}).items():
        s[k] = v
    return [{'series': k, 'values': v} for k, v in s.items()]

tests = []
# 1. a normal day fires nothing
checks = []
for h in ['1h', '3h', '6h', '9h', '12h', '15h', '18h', '21h', '23h55m']:
    for a in rules:
        checks.append({'eval_time': h, 'alertname': a, 'exp_alerts': []})
tests.append({'name': 'a normal day of 15-minute syncs fires nothing', 'interval': '5m',
              'input_series': day_series(288), 'alert_rule_test': checks})

def case(name, alert, over, quiet_at, fire_at, expected, interval='1m', points=120, more=None):
    t = {'name': name, 'interval': interval, 'input_series': day_series(points, over),
         'alert_rule_test': [
             {'eval_time': quiet_at, 'alertname': alert, 'exp_alerts': []},
             {'eval_time': fire_at, 'alertname': alert, 'exp_alerts': expected}]}
    if more:
        t['alert_rule_test'] += more
    tests.append(t)

def status_over(st, slot=SLOT):
    return {sel('dfe_airbyte_slot_status_is', status=st, **slot): '0x10 1x110',
            sel('dfe_airbyte_slot_status_is', status='ok', **slot): '1x10 0x110',
            sel('dfe_airbyte_slot_status_code', **slot): '0x10 ' + str(STATUSES.index(st)) + 'x110'}

case('slot at warning for 15 minutes', 'AirbyteSlotWarning', status_over('warning'), '20m', '30m',
     [exp('AirbyteSlotWarning', status='warning', **SLOT)])
case('slot critical for 2 minutes', 'AirbyteSlotCritical', status_over('critical'), '12m', '15m',
     [exp('AirbyteSlotCritical', status='critical', **SLOT)])
case('slot lost', 'AirbyteSlotLost', status_over('lost'), '10m', '13m',
     [exp('AirbyteSlotLost', status='lost', **SLOT)])
case('slot invalidated by idle_replication_slot_timeout', 'AirbyteSlotLost', status_over('idle_timeout'), '10m', '13m',
     [exp('AirbyteSlotLost', status='idle_timeout', **SLOT)])
# Airbyte stops confirming: retained WAL climbs 1 GB per hour from 1 GB; the
# limit (10 GB) would be reached after 9 hours; the rule fires hours before
case('retained WAL keeps growing: time to limit', 'AirbyteSlotTimeToLimit',
     {sel('dfe_airbyte_slot_retained_bytes', **SLOT): f'{1*GB}+{GB//12}x144', sel('dfe_airbyte_slot_limit_bytes', **SLOT): f'{10*GB}x144'},
     '1h', '5h', [exp('AirbyteSlotTimeToLimit', **SLOT)], interval='5m', points=144,
     more=[{'eval_time': '11h55m', 'alertname': 'AirbyteSlotTimeToLimit', 'exp_alerts': []}] and [])
case('no successful sync: stale', 'AirbyteSyncStale',
     {sel('dfe_airbyte_sync_stale', **LOCAL): '0x10 1x110'}, '14m', '20m', [exp('AirbyteSyncStale', **LOCAL)])
case('Airbyte disabled the connection', 'AirbyteConnectionDisabled',
     {sel('dfe_airbyte_sync_connection_disabled', **LOCAL): '0x10 1x110'}, '14m', '20m',
     [exp('AirbyteConnectionDisabled', **LOCAL)])
case('the newest deploy failed', 'AirbyteDeployFailed',
     {sel('dfe_airbyte_last_deploy_failed', **LOCAL): '0x10 1x110'}, '10m', '12m',
     [exp('AirbyteDeployFailed', **LOCAL)])
case('a policy tag check failed', 'AirbytePolicyTagsFailed',
     {sel('dfe_airbyte_policy_tags_failures_last_hour', **LOCAL): '0x10 1x60 0x50'}, '10m', '12m',
     [exp('AirbytePolicyTagsFailed', **LOCAL)],
     more=[{'eval_time': '100m', 'alertname': 'AirbytePolicyTagsFailed', 'exp_alerts': []}])
case('a reconciliation mismatch survived the next sync', 'AirbyteReconcileMismatch',
     {sel('dfe_airbyte_reconcile_mismatch', table_name='applications', **LOCAL): '0x10 1x60 0x50'}, '10m', '12m',
     [exp('AirbyteReconcileMismatch', table_name='applications', **LOCAL)],
     more=[{'eval_time': '100m', 'alertname': 'AirbyteReconcileMismatch', 'exp_alerts': []}])

# The remote target "svc_a": its alert fires for it alone, named by its
# target, while "local" (whose series stay normal) fires nothing.
case('remote target: its slot is lost, local is fine', 'AirbyteSlotLost', status_over('lost', REMOTE_SLOT),
     '10m', '13m', [exp('AirbyteSlotLost', status='lost', **REMOTE_SLOT)])
case('remote target: its syncs are stale, local is fine', 'AirbyteSyncStale',
     {sel('dfe_airbyte_sync_stale', **REMOTE): '0x10 1x110'}, '14m', '20m', [exp('AirbyteSyncStale', **REMOTE)])
case('remote target: its deploy failed, local is fine', 'AirbyteDeployFailed',
     {sel('dfe_airbyte_last_deploy_failed', **REMOTE): '0x10 1x110'}, '10m', '12m',
     [exp('AirbyteDeployFailed', **REMOTE)])
case('remote target: a reconciliation mismatch, local is fine', 'AirbyteReconcileMismatch',
     {sel('dfe_airbyte_reconcile_mismatch', table_name='applications', **REMOTE): '0x10 1x110'}, '10m', '12m',
     [exp('AirbyteReconcileMismatch', table_name='applications', **REMOTE)])
# the guard cannot reach svc_a: its slot's status turns unreachable and the
# target's reachable gauge 0; only the target alert fires (not the slot's)
case('remote target unreachable for 5 minutes', 'AirbyteTargetUnreachable',
     dict(status_over('unreachable', REMOTE_SLOT), **{sel('dfe_airbyte_target_reachable', **REMOTE): '1x10 0x110'}),
     '14m', '20m', [exp('AirbyteTargetUnreachable', **REMOTE)],
     more=[{'eval_time': '60m', 'alertname': a, 'exp_alerts': []}
           for a in ['AirbyteSlotLost', 'AirbyteSlotCritical', 'AirbyteSlotWarning']])
W = sel('dfe_airbyte_worker_running', backend_type='dfe_airbyte worker')
U = sel('dfe_airbyte_worker_uptime_seconds', backend_type='dfe_airbyte worker')
case('the only worker is gone', 'AirbyteWorkerDown',
     {sel('dfe_airbyte_workers_running'): '1x10 0x110', sel('dfe_airbyte_workers_types_running'): '1x10 0x110',
      W: '1x10 _x110', U: '86400+60x10 _x110'}, '15m', '25m', [exp('AirbyteWorkerDown')])
# two workers (guard and network); the network worker dies
G = sel('dfe_airbyte_worker_running', backend_type='dfe_airbyte guard')
N = sel('dfe_airbyte_worker_running', backend_type='dfe_airbyte network')
GU = sel('dfe_airbyte_worker_uptime_seconds', backend_type='dfe_airbyte guard')
NU = sel('dfe_airbyte_worker_uptime_seconds', backend_type='dfe_airbyte network')
case('one of two workers is gone', 'AirbyteWorkerDown',
     {sel('dfe_airbyte_workers_running'): '2x10 1x110', sel('dfe_airbyte_workers_types_running'): '2x10 1x110',
      W: '_x120', U: '_x120', G: '1x120', N: '1x10 _x110', GU: '86400+60x120', NU: '86400+60x10 _x110'},
     '15m', '25m', [exp('AirbyteWorkerDown')])
# an upgrade splits the one worker in two: more types, nothing fires
tests.append({'name': 'an upgrade from one worker to two fires nothing', 'interval': '1m',
              'input_series': day_series(120, {
                  sel('dfe_airbyte_workers_running'): '1x10 0 2x109', sel('dfe_airbyte_workers_types_running'): '1x10 0 2x109',
                  W: '1x10 _x110', U: '86400+60x10 _x110', G: '_x11 1x109', N: '_x11 1x109',
                  GU: '_x11 0+60x109', NU: '_x11 0+60x109'}),
              'alert_rule_test': [{'eval_time': t, 'alertname': 'AirbyteWorkerDown', 'exp_alerts': []}
                                  for t in ['15m', '30m', '60m', '119m']]})
case('a worker in a restart loop', 'AirbyteWorkerDown',
     {U: '86400+60x10 0 10 20 5 15 25 0 10 20 5 15 25 0 10 20 5 15 25 0 10 20 5 15 25 0 10 20 5 15 25 0 10 20 5 15 25 0 10 20 5 15 25 0x70'},
     '20m', '40m', [exp('AirbyteWorkerDown', backend_type='dfe_airbyte worker')])

doc = {'rule_files': ['alerts.yml'], 'evaluation_interval': '1m', 'tests': tests}
class D(yaml.SafeDumper): pass
D.add_representer(str, lambda d, v: d.represent_scalar('tag:yaml.org,2002:str', v))
head = """# Unit tests of monitoring/alerts.yml:  promtool test rules monitoring/alerts_test.yml
# (run by test/t/061_prometheus.pl).  Series are named as the exporter names
# them (monitoring/postgres_exporter.yaml) with instance/job labels added by
# the scrape; the per-service ones for two targets, "local" and the remote
# "svc_a".  The first test is a normal day of both: a sync every 15 minutes, so
# the slot's retained WAL is a sawtooth (100 -> 200 -> 300 MB of a 2 GB limit,
# dropping when the next sync confirms; a slope taken within one tooth would
# predict the limit within 6 hours), every sync succeeds, one worker: nothing fires.
# Then one case per alert that fires it, each on top of that normal day, and
# cases where an alert fires for svc_a alone while local is fine.
# Generated by monitoring/make_alerts_test.py: edit that, not this file.
"""
open('monitoring/alerts_test.yml', 'w').write(head + yaml.dump(doc, Dumper=D, sort_keys=False, width=10000))

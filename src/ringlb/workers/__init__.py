"""Several data planes on one host, fed by one control plane (`--workers N`).

`plane` assembles one process's data plane from the settings (the single-process balancer
uses it too); `channel` carries the messages between the control process and a worker;
`worker` is a worker process; `pool` is the control process's side: it starts, feeds and
replaces the workers.
"""

"""`ringlb analyze`: the experiments A-1..A-4 of the specification, their charts and report.

One module per experiment (`distribution` A-1, `scaling` A-2, `endpoints` and `failure`
A-3, `hashes` A-4), the load client (`client`), the balancer under test (`target`),
chart helpers (`charts`), the report writer (`report`) and the orchestration (`runner`).
"""

from lbtest import BalancerProcess


def test_rep_lists_the_three_default_replicas(balancer: BalancerProcess) -> None:
    reply = balancer.get("/rep")
    assert reply.status == 200
    assert reply.body == (
        b'{"message":{"N":3,"replicas":["server_1","server_2","server_3"]},"status":"successful"}'
    )

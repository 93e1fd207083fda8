-- wrk: a random 6-digit X-Request-ID on every request (the contract's request key), so
-- hash policies spread the load as `make run`'s defaults do with random ids.
request = function()
    wrk.headers["X-Request-ID"] = tostring(math.random(100000, 999999))
    return wrk.format()
end

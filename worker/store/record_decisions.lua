-- Queues an experiment's new decisions and saves its decision state, atomically, so a
-- decision is never lost between "decided" and "published", and never queued twice.
-- Each new decision's event also enters the experiment's history, which the relay does
-- not trim: the results page shows it.
--
-- KEYS[1]  set of the idempotency keys already queued (worker/store/keys.py decided_key)
-- KEYS[2]  the experiment's winners outbox, a list the relay publishes and trims
-- KEYS[3]  the experiment's decision state
-- KEYS[4]  the experiment's decision history, a list of events, newest first
--          All four carry the experiment's hash tag {x:<experiment>}: one Cluster slot.
-- ARGV[1]  the new state (JSON)
-- ARGV[2]  how many events the history keeps (the newest)
-- ARGV[3…] (idempotency key, outbox entry, event JSON) triples
--
-- Returns how many decisions were queued (the others had been, by this or another worker).

local taken = 0
for index = 3, #ARGV, 3 do
  if redis.call('SADD', KEYS[1], ARGV[index]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[index + 1])
    redis.call('LPUSH', KEYS[4], ARGV[index + 2])
    taken = taken + 1
  end
end
if taken > 0 then
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
end
redis.call('SET', KEYS[3], ARGV[1])
return taken

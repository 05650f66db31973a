-- Queues an experiment's new decisions and saves its decision state, atomically, so a
-- decision is never lost between "decided" and "published", and never queued twice.
--
-- KEYS[1]  set of the idempotency keys already queued (worker/store/keys.py decided_key)
-- KEYS[2]  the experiment's winners outbox, a list the relay publishes and trims
-- KEYS[3]  the experiment's decision state
--          All three carry the experiment's hash tag {x:<experiment>}: one Cluster slot.
-- ARGV     (idempotency key, outbox entry) pairs, then the new state (JSON)
--
-- Returns how many decisions were queued (the others had been, by this or another worker).

local taken = 0
for index = 1, #ARGV - 1, 2 do
  if redis.call('SADD', KEYS[1], ARGV[index]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[index + 1])
    taken = taken + 1
  end
end
redis.call('SET', KEYS[3], ARGV[#ARGV])
return taken

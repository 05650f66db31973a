-- Applies one batch of commands from one Kafka partition, atomically.
--
-- KEYS[1]  the partition's offsets hash (declares the slot on Redis Cluster; every
--          other key built here carries the same {partition} hash tag)
-- ARGV[1]  key base of the partition, e.g. "ab:{3}" (worker/store/keys.py names every
--          suffix built on it)
-- ARGV[2]  JSON array of commands in offset order (worker/store/sink_protocol.py)
-- ARGV[3]  JSON array of completed (frozen) experiment ids
-- ARGV[4]  de-duplication window in seconds
-- ARGV[5]  hold time of unattributed conversions in milliseconds (publish time)
-- ARGV[6]  now, unix seconds
-- ARGV[7]  JSON object topic -> the offset the consumer last applied (or was positioned
--          after) in this partition; topics it does not know are left out
-- ARGV[8]  the assignments topic: its records' publish times drive the hold clock
-- ARGV[9]  JSON object experiment -> its counting rules from the definition,
--          {cuped_ms, goals = {goal: {kind, cap}}} (ExperimentRules in sink_protocol.py);
--          an experiment left out has no caps and no CUPED covariate, a goal left out
--          no cap and no kind
--
-- A command whose offset is not above the stored offset of its topic was applied
-- before (a replay after a crash or a rebalance) and changes nothing. A stored offset
-- BELOW what the consumer expects means Redis lost writes (restored from a snapshot, a
-- promoted replica, a power cut): the script then writes nothing and returns
-- {"rollback": {topic: stored offset}}, so that the consumer re-reads from there
-- instead of applying past the hole. The script validates nothing that could raise
-- half-way: Python validated every command.

local base = ARGV[1]
local commands = cjson.decode(ARGV[2])
local frozen = {}
for _, experiment in ipairs(cjson.decode(ARGV[3])) do frozen[experiment] = true end
local dedup_seconds = tonumber(ARGV[4])
local hold_ms = tonumber(ARGV[5])
local now_seconds = tonumber(ARGV[6])
local expected = cjson.decode(ARGV[7])
local assignments_topic = ARGV[8]
local rules = cjson.decode(ARGV[9])

local offsets_key = KEYS[1]

-- What this call applies past, per topic: read once (here or when first needed).
local applied_offsets = {}
local behind = nil
for topic, offset in pairs(expected) do
  local stored = redis.call('HGET', offsets_key, topic)
  applied_offsets[topic] = tonumber(stored or '-1')
  -- No stored offset at all is behind too (-1): a replica promoted in the first
  -- seconds of a partition lost every offset of it.
  if applied_offsets[topic] < offset then
    behind = behind or {}
    behind[topic] = applied_offsets[topic]
  end
end
if behind then return cjson.encode({rollback = behind}) end
local outbox_key = base .. ':outbox'
local hold_key = base .. ':hold'
local held_raw_key = base .. ':heldraw'
local stats = {applied = 0, replayed = 0, duplicates = 0, dead_lettered = 0, forwarded = 0,
               conversions_held = 0, conversions_expired = 0}

-- Lua numbers reach Redis through "%.14g"; revenue needs every digit, but only as many
-- as read back the same number ("38.61", not "38.609999999999999": stored bytes).
local function num(x)
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format('%d', x) end
  for _, format in ipairs({'%.15g', '%.16g'}) do
    local text = string.format(format, x)
    if tonumber(text) == x then return text end
  end
  return string.format('%.17g', x)
end

local function split(text, sep)
  local parts = {}
  for part in string.gmatch(text, '([^' .. sep .. ']+)') do parts[#parts + 1] = part end
  return parts
end

local function applied_offset(topic)
  local offset = applied_offsets[topic]
  if offset == nil then
    offset = tonumber(redis.call('HGET', offsets_key, topic) or '-1')
    applied_offsets[topic] = offset
  end
  return offset
end

-- De-duplication of conversions by event id (DESIGN.md section 3). An id is remembered
-- as a 52-bit fingerprint (13 hex digits of its SHA-1: exact in a Lua number) in one of 256 sets
-- per partition and event day, "{base}:dd:{day}:{first 2 hex digits}". Integer members
-- keep a set intset-encoded (8 bytes each) up to set-max-intset-entries (512 by
-- default, so about 130,000 events per partition and day; more turn a set into a
-- hashtable of about 40 bytes per member, which is still correct). With the bucket
-- digits a fingerprint has 60 bits: two different ids of one partition and day are
-- taken for each other with probability about n^2 / 2^61 (1e-6 at n = 1.5 million).
local dedup_expiry = {}
local function is_duplicate(event_id, ts)
  local digest = redis.sha1hex(event_id)
  local day = math.floor(ts / 86400000)
  local key = base .. ':dd:' .. day .. ':' .. string.sub(digest, 1, 2)
  local fingerprint = string.format('%d', tonumber(string.sub(digest, 3, 15), 16))
  if redis.call('SADD', key, fingerprint) == 0 then return true end
  dedup_expiry[key] = math.max((day + 1) * 86400 + dedup_seconds, now_seconds + 86400)
  return false
end

-- The hold clock (DESIGN.md section 3): the newest publish time (Kafka record
-- timestamp, ms) of the records read so far in this partition of the assignments
-- topic. It depends only on how far that partition has been read, never on how far
-- the conversions topic is ahead or behind, so a replay decides as the first run did.
local clock = tonumber(redis.call('GET', base .. ':wm') or '0')

-- Per-visitor state, the hash "{base}:v:{visitor}" (read by worker/store/visitor_reader.py).
-- Every field is short so that the hash stays listpack-encoded (Redis' defaults: up to
-- 128 fields of at most 64 bytes each; one longer value turns the whole hash into a
-- hashtable, several times larger). Experiments and goals are named once, in kx and
-- kg; other fields use their 1-based position there (X, G):
--   kx                 experiments entered, in entry order, "a,b"
--   kg                 goals with events, in first-event order, and how many events of
--                      each were appended, "goal:n,..."
--   eX                 entry, "variant|entry_ms|cell_id|clock" (cell ids: see
--                      cells_key; clock: the hold clock when the entry was applied,
--                      which decides whether it came within a conversion's hold)
--   xX                 extended context JSON of the entry
--   mX                 the first other variant seen (a multiple exposure)
--   vX:{visit}         hour of the visit's first exposure
--   kG:{n}             the n-th goal event, JSON {t, v, c, x, s, a}; while held also
--                      {h = 1, i = event id}. A record dead-lettered after the hold is
--                      deleted, leaving a gap in n.
--   nX                 visits of the entry so far (V: the vX:{visit} fields)
--   rX                 the entry's row in the experiment's columns (see the columnar
--                      visitor store below)
--   sX:G               counted events, revenue, orders and converted visits, raw (before
--                      any cap), "count|revenue|orders|visits"
--   cX:G:{visit}       this visit has a counted event
--   pX:G               CUPED: the goal's settled events in the covariate window before
--                      entry, raw, "count|revenue" (only when there are some)

-- entry: "variant|entry_ms|cell_id|clock" -> variant, entry_ms, hour, cell_id, clock
-- (entries written before the clock was kept have none: 0, within every hold)
local function parse_entry(text)
  local bar1 = string.find(text, '|', 1, true)
  local bar2 = string.find(text, '|', bar1 + 1, true)
  local bar3 = string.find(text, '|', bar2 + 1, true)
  local entry_ms = tonumber(string.sub(text, bar1 + 1, bar2 - 1))
  local cell, entry_clock = string.sub(text, bar2 + 1), 0
  if bar3 then
    cell, entry_clock = string.sub(text, bar2 + 1, bar3 - 1), tonumber(string.sub(text, bar3 + 1))
  end
  return string.sub(text, 1, bar1 - 1), entry_ms, math.floor(entry_ms / 3600000), cell,
         entry_clock
end

-- Counters (DESIGN.md section 4): one hash per experiment and entry/visit hour,
-- "{base}:c:{experiment}:{hour}", with ONE field per segment cell x variant holding
-- all its visitor metrics, "{cell_id}:{variant}" -> "n,visits,me,vc,vc2", and one per
-- goal, "{cell_id}:{variant}:{goal}" ->
-- "cv,cvis,ev,ev2,ord,rev,rev2,cvis2,vcvis,vev,vrev,ord2,revord,x,x2,xy" (trailing zeros
-- left out, so metrics added at the end cost nothing where they are 0). Only `visits`
-- sits in the visit's hour; everything else in the entry hour. Per visitor, with V
-- visits, C converted visits, E events, R revenue, O orders, X the CUPED covariate and Y
-- the goal's value after entry: vc = V, vc2 = V^2, cvis2 = C^2, vcvis = V*C, vev = V*E,
-- vrev = V*R, ord2 = O^2, revord = R*O, x = X, x2 = X^2, xy = X*Y (E, R, X, Y capped as
-- the definition says, see counted_step). A product grows by the other factor's value
-- whenever one factor grows, so it equals the product of the final values whatever the
-- order in which the factors grew. Cells are interned per partition ("{base}:cells": cell text -> small id) and
-- the hours that have counters are listed in "{base}:ch:{experiment}" for readers.
-- Short fields and small per-hour hashes stay listpack-encoded under Redis' default
-- limits (128 fields, 64-byte values) at moderate traffic; one field per metric with
-- the whole cell text in it cost ten times the memory and reading time.
local VISITOR_METRICS = {n = 1, visits = 2, me = 3, vc = 4, vc2 = 5}
local GOAL_METRICS = {cv = 1, cvis = 2, ev = 3, ev2 = 4, ord = 5, rev = 6, rev2 = 7,
                      cvis2 = 8, vcvis = 9, vev = 10, vrev = 11, ord2 = 12, revord = 13,
                      x = 14, x2 = 15, xy = 16}
local cells_key = base .. ':cells'
local cell_ids = {}
local function cell_id(cell)
  local id = cell_ids[cell]
  if id == nil then
    id = redis.call('HGET', cells_key, cell)
    if not id then
      -- '#' holds the last id given; a cell text always contains '|', never equals it
      id = tostring(redis.call('HINCRBY', cells_key, '#', 1))
      redis.call('HSET', cells_key, cell, id)
    end
    cell_ids[cell] = id
  end
  return id
end

-- The columnar visitor store (DESIGN.md section 4; read by worker/store/visitor_columns.py):
-- what the scans need, appended per experiment as fixed-width little-endian records, so a
-- reader fetches it in a few large GETRANGEs and decodes it with numpy:
--   "{base}:xe:{experiment}"  entrants, 20 bytes each, in the order of the entrants list
--                             "{base}:ev:{experiment}" (the record's position is the
--                             visitor's row): variant (string id), entry ms (double),
--                             cell id, extended context JSON (string id, 0: none)
--   "{base}:xf:{experiment}"  later facts about a visitor, 8 bytes: row, then the hour
--                             of a visit's first exposure, or -1 for a multiple exposure
--   "{base}:xg:{experiment}"  goal events that may count for the experiment, 40 bytes:
--                             row, goal (string id), time ms (double), revenue (double,
--                             NaN without), visit (id in "{base}:vid", identity only),
--                             the experiment it is restricted to, its attributes JSON,
--                             its currency (string ids, 0: none)
-- Strings are interned per partition in "{base}:str" (text -> id, ids 1, 2, ... given in
-- order, so the next is HLEN + 1), visit ids in "{base}:vid" the same way; the visitor
-- hash keeps the row of each entry in rX. An event is appended to an experiment when it
-- is applied (for the entries the visitor has) or when the visitor enters (the events
-- stored before), and only settled: a held event has no entry it may count for (it
-- would not be held), an entry that may count it releases it before appending it, and a
-- hold that expires dead-letters an event no column holds. So no record is ever
-- rewritten: the store is append-only. Appends are gathered per key and written once
-- when the batch ends (write_columns).
local NO_VALUE = 0 / 0
local column_appends = {}
local function append_record(key, record)
  local pending = column_appends[key]
  if pending == nil then
    pending = {}
    column_appends[key] = pending
  end
  pending[#pending + 1] = record
end

local function write_columns()
  for key, records in pairs(column_appends) do
    redis.call('APPEND', key, table.concat(records))
  end
end

local function interner(key)
  local known = {}
  return function(text)
    if text == nil then return 0 end
    local id = known[text]
    if id == nil then
      id = redis.call('HGET', key, text)
      if id then
        id = tonumber(id)
      else
        id = redis.call('HLEN', key) + 1
        redis.call('HSET', key, text, id)
      end
      known[text] = id
    end
    return id
  end
end
local string_id = interner(base .. ':str')
local visit_id = interner(base .. ':vid')

local function append_entrant(experiment, variant, entry_ms, cell, context)
  append_record(base .. ':xe:' .. experiment, struct.pack('<I4dI4I4', string_id(variant),
    entry_ms, tonumber(cell), string_id(context)))
end

-- hour: the visit's first-exposure hour; -1: a multiple exposure.
local function append_fact(experiment, row, hour)
  append_record(base .. ':xf:' .. experiment, struct.pack('<I4i4', row, hour))
end

local function append_event(experiment, row, goal, record)
  append_record(base .. ':xg:' .. experiment, struct.pack('<I4I4ddI4I4I4I4', row,
    string_id(goal), record.t, record.v ~= nil and tonumber(record.v) or NO_VALUE,
    visit_id(record.s or '_'), string_id(record.x),
    string_id(record.a ~= nil and cjson.encode(record.a) or nil), string_id(record.c)))
end

-- The visitor's row in an experiment's columns (nil: entered before the store existed).
local function row_of(visitor_key, xn)
  local row = redis.call('HGET', visitor_key, 'r' .. xn)
  return row and tonumber(row)
end

-- Read cost must not grow with history (DESIGN.md section 4): every delta counted into
-- an hour's hash is added in the same call, with the same packed metrics, to
--   "{base}:day:{experiment}:{day}"  the UTC day's rollup (day = hour // 24), fields
--                                    "{cell_id}:{variant}[:{goal}]" as in the hours;
--   "{base}:tot:{experiment}"        the running totals, fields "{variant}[:{goal}]"
--                                    (no cell, no hour);
--   "{base}:ctot:{experiment}"       the running totals per cell, fields as in the
--                                    hours (no hour): whole-run cell filters and
--                                    breakdowns read them, not every day;
-- and "{base}:days:{experiment}" lists the days that have a rollup. These hashes also
-- keep the first and the last hour that has counters in them, fields "<" and ">" (no
-- identifier holds either character): the pace of the result (days with data) stays
-- exact to the hour without reading hours. A delta lands in the day of the hour it
-- lands in, so a UTC-aligned date range reads days and gets the hours' numbers exactly;
-- the default result reads one totals hash per partition whatever the history.
--
-- Counter fields touched by this batch: key -> field -> the batch's deltas. Each key is
-- read and written back once when the batch ends (write_counters), however often its
-- fields change, in the hours, the days and the totals alike.
local counter_cache = {}
-- Day and totals keys touched by this batch -> {first hour, last hour} added to them.
local hour_spans = {}
-- experiment -> its key stems, built once per batch
local experiment_keys = {}

local function keys_of(experiment)
  local stems = experiment_keys[experiment]
  if stems == nil then
    stems = {hours = base .. ':c:' .. experiment .. ':', days = base .. ':day:' .. experiment .. ':',
             totals = base .. ':tot:' .. experiment, cell_totals = base .. ':ctot:' .. experiment,
             hour_set = base .. ':ch:' .. experiment,
             day_set = base .. ':days:' .. experiment}
    experiment_keys[experiment] = stems
  end
  return stems
end

-- The cached fields of a counters hash; set_key lists the hash's member on first use.
local function cached_fields(key, set_key, member)
  local fields = counter_cache[key]
  if fields == nil then
    fields = {}
    counter_cache[key] = fields
    if set_key then redis.call('SADD', set_key, member) end
  end
  return fields
end

local function note_hour(key, hour)
  local span = hour_spans[key]
  if span == nil then
    hour_spans[key] = {hour, hour}
  elseif hour < span[1] then
    span[1] = hour
  elseif hour > span[2] then
    span[2] = hour
  end
end

-- Deltas only: the stored numbers are read and added once per key when the batch ends
-- (write_counters), in one HMGET and one HSET, not one HGET and HSET per field.
local function add_to(key, fields, field, names, deltas)
  local values = fields[field]
  if values == nil then
    values = {}
    fields[field] = values
  end
  for name, delta in pairs(deltas) do
    local index = names[name]
    for missing = #values + 1, index do values[missing] = 0 end
    values[index] = values[index] + delta
  end
end

-- cell is the cell's id (cell_id); goal is nil for the visitor metrics.
local function add_counts(experiment, hour, variant, cell, goal, deltas)
  local stems = keys_of(experiment)
  local day = math.floor(hour / 24)
  local hour_key = stems.hours .. hour
  local day_key = stems.days .. day
  local field = variant
  local names = VISITOR_METRICS
  if goal ~= nil then
    field = field .. ':' .. goal
    names = GOAL_METRICS
  end
  local cell_field = cell .. ':' .. field
  add_to(hour_key, cached_fields(hour_key, stems.hour_set, hour), cell_field, names, deltas)
  add_to(day_key, cached_fields(day_key, stems.day_set, day), cell_field, names, deltas)
  add_to(stems.totals, cached_fields(stems.totals), field, names, deltas)
  add_to(stems.cell_totals, cached_fields(stems.cell_totals), cell_field, names, deltas)
  note_hour(day_key, hour)
  note_hour(stems.totals, hour)
  note_hour(stems.cell_totals, hour)
end

-- Fields per HMGET/HSET call: Lua's unpack() is bounded by its C stack (LUAI_MAXCSTACK).
local FIELDS_PER_CALL = 1000

local function write_fields(key, names, deltas)
  local stored = redis.call('HMGET', key, unpack(names))
  local pairs_out = {}
  for position, field in ipairs(names) do
    local values = deltas[position]
    if stored[position] then
      for index, part in ipairs(split(stored[position], ',')) do
        values[index] = (values[index] or 0) + tonumber(part)
      end
    end
    local last = #values
    while last > 1 and values[last] == 0 do last = last - 1 end
    local texts = {}
    for index = 1, last do texts[index] = num(values[index] or 0) end
    pairs_out[#pairs_out + 1] = field
    pairs_out[#pairs_out + 1] = table.concat(texts, ',')
  end
  redis.call('HSET', key, unpack(pairs_out))
end

local function write_counters()
  for key, fields in pairs(counter_cache) do
    local names, deltas = {}, {}
    for field, values in pairs(fields) do
      names[#names + 1] = field
      deltas[#deltas + 1] = values
      if #names == FIELDS_PER_CALL then
        write_fields(key, names, deltas)
        names, deltas = {}, {}
      end
    end
    if #names > 0 then write_fields(key, names, deltas) end
  end
  for key, span in pairs(hour_spans) do
    local stored = redis.call('HMGET', key, '<', '>')
    local first, last = span[1], span[2]
    if stored[1] then first = math.min(first, tonumber(stored[1])) end
    if stored[2] then last = math.max(last, tonumber(stored[2])) end
    redis.call('HSET', key, '<', num(first), '>', num(last))
  end
end

-- The definition's rule for a goal of an experiment: its kind ('conversion', 'revenue',
-- 'count', or nil when the definition does not name the goal) and its cap (nil: none).
local function goal_rule(experiment, goal)
  local experiment_rules = rules[experiment]
  local rule = experiment_rules and experiment_rules.goals[goal]
  if rule == nil then return nil, nil end
  return rule.kind, rule.cap
end

local function capped(value, cap)
  if cap ~= nil and value > cap then return cap end
  return value
end

-- A capped per-visitor sum whose raw value grows from `old` by `delta`: what it counted
-- before, and its step min(old + delta, cap) - min(old, cap). The visitor hash keeps raw
-- values, so the counted ones do not depend on the order of the events. Uncapped (or
-- below the cap) the step is `delta` itself: such sums add exactly what they always did.
-- The square of the counted value then grows by 2 * before * step + step^2.
local function counted_step(old, delta, cap)
  if cap == nil or (old <= cap and old + delta <= cap) then return old, delta end
  local before = math.min(old, cap)
  return before, math.min(old + delta, cap) - before
end

-- The visitor's value of a goal on its kind's scale (CUPED's X and Y): conversion 0/1,
-- count the events, revenue the revenue, capped; from the raw count and revenue.
local function scale_value(kind, cap, count, revenue)
  if kind == 'conversion' then return count > 0 and 1 or 0 end
  if kind == 'count' then return capped(count, cap) end
  return capped(revenue, cap)
end

-- That value before one more event (with revenue `value`, or nil), and its step.
local function scale_step(kind, cap, count, revenue, value)
  if kind == 'conversion' then
    if count > 0 then return 1, 0 end
    return 0, 1
  elseif kind == 'count' then
    return counted_step(count, 1, cap)
  end
  return counted_step(revenue, value or 0, cap)
end

-- sX:G -> raw count, revenue, orders, converted visits (a field written before converted
-- visits were kept has three parts).
local function parse_sums(text)
  if not text then return 0, 0, 0, 0 end
  local parts = split(text, '|')
  return tonumber(parts[1]), tonumber(parts[2]), tonumber(parts[3]), tonumber(parts[4] or '0')
end

-- Counts one goal event of a visitor for one experiment the visitor had entered.
-- xn and gn: the positions of experiment and goal in the visitor's kx and kg.
local function count_conversion(visitor_key, xn, experiment, entry_text, gn, goal, record)
  local variant, _, entry_hour, cell = parse_entry(entry_text)
  local kind, cap = goal_rule(experiment, goal)
  local sums_field = 's' .. xn .. ':' .. gn
  local stored = redis.call('HMGET', visitor_key, sums_field, 'n' .. xn, 'p' .. xn .. ':' .. gn)
  local count, revenue, orders, converted_visits = parse_sums(stored[1])
  local visits = tonumber(stored[2] or '0')
  -- carried as text: cjson would keep only 14 significant digits of a number
  local value = record.v ~= nil and tonumber(record.v) or nil
  local deltas = {}
  if count == 0 then deltas.cv = 1 end
  -- a cap bounds the events of count goals and the revenue of revenue goals
  local events_before, events_step = counted_step(count, 1, kind == 'count' and cap or nil)
  deltas.ev = events_step
  deltas.ev2 = 2 * events_before * events_step + events_step * events_step
  deltas.vev = visits * events_step
  if value ~= nil then
    local revenue_before, revenue_step =
      counted_step(revenue, value, kind == 'revenue' and cap or nil)
    deltas.rev = revenue_step
    deltas.rev2 = 2 * revenue_before * revenue_step + revenue_step * revenue_step
    deltas.vrev = visits * revenue_step
    deltas.ord = 1
    deltas.ord2 = 2 * orders + 1
    deltas.revord = revenue_before + revenue_step * (orders + 1)  -- (R + r)(O + 1) - R O
  end
  -- Converted visits: distinct visits with a counted goal event, in the visitor's
  -- cohort like conversions, so the count does not depend on arrival order.
  if redis.call('HSETNX', visitor_key, 'c' .. xn .. ':' .. gn .. ':' .. (record.s or '_'), '1')
      == 1 then
    deltas.cvis = 1
    deltas.cvis2 = 2 * converted_visits + 1
    deltas.vcvis = visits
    converted_visits = converted_visits + 1
  end
  if stored[3] and kind ~= nil then
    -- CUPED: Y grows while the covariate X is set (add_covariate grows X while Y is set)
    local pre = split(stored[3], '|')
    local covariate = scale_value(kind, cap, tonumber(pre[1]), tonumber(pre[2]))
    local _, step = scale_step(kind, cap, count, revenue, value)
    deltas.xy = covariate * step
  end
  if value ~= nil then
    revenue, orders = revenue + value, orders + 1
  end
  redis.call('HSET', visitor_key, sums_field,
    (count + 1) .. '|' .. num(revenue) .. '|' .. orders .. '|' .. converted_visits)
  add_counts(experiment, entry_hour, variant, cell, goal, deltas)
end

local function counts_for(experiment, entry_text, record)
  if entry_text == false or entry_text == nil or frozen[experiment] then return false end
  if record.x ~= nil and record.x ~= experiment then return false end
  local _, entry_ms = parse_entry(entry_text)
  return record.t >= entry_ms
end

-- CUPED (DESIGN.md section 3): a goal event adds to the covariate X of an entry when it
-- happened in the experiment's window before the entry (entry - cuped_ms <= t < entry),
-- may count for the experiment, and is settled: not held, since a held one may still be
-- dead-lettered. Each (event, entry) pair is added once, when the last of these facts
-- becomes true: the event is applied settled (apply_conversion), the entry is applied
-- (apply_assignment, after the holds it releases), or a hold is released
-- (apply_assignment for the other entries, expire_holds). CUPED is off for an
-- experiment with cuped_ms 0 or without rules, and for a goal its definition does not
-- name (no scale to measure X on).
local function covaries_for(experiment, entry_text, goal, record)
  if entry_text == false or entry_text == nil or frozen[experiment] or record.h then
    return false
  end
  if record.x ~= nil and record.x ~= experiment then return false end
  local experiment_rules = rules[experiment]
  if experiment_rules == nil or experiment_rules.cuped_ms == 0
      or experiment_rules.goals[goal] == nil then
    return false
  end
  local _, entry_ms = parse_entry(entry_text)
  return record.t < entry_ms and record.t >= entry_ms - experiment_rules.cuped_ms
end

-- Adds a goal event to the visitor's covariate X of one entry (covaries_for said so).
local function add_covariate(visitor_key, xn, experiment, entry_text, gn, goal, record)
  local variant, _, entry_hour, cell = parse_entry(entry_text)
  local kind, cap = goal_rule(experiment, goal)
  local pre_field = 'p' .. xn .. ':' .. gn
  local stored = redis.call('HMGET', visitor_key, pre_field, 's' .. xn .. ':' .. gn)
  local count, revenue = 0, 0
  if stored[1] then
    local parts = split(stored[1], '|')
    count, revenue = tonumber(parts[1]), tonumber(parts[2])
  end
  local value = record.v ~= nil and tonumber(record.v) or nil
  local before, step = scale_step(kind, cap, count, revenue, value)
  redis.call('HSET', visitor_key, pre_field, (count + 1) .. '|' .. num(revenue + (value or 0)))
  if step ~= 0 then
    local post_count, post_revenue = parse_sums(stored[2])
    add_counts(experiment, entry_hour, variant, cell, goal, {x = step,
      x2 = 2 * before * step + step * step,
      xy = step * scale_value(kind, cap, post_count, post_revenue)})
  end
end

local function release_hold(visitor, record)
  redis.call('ZREM', hold_key, visitor .. '|' .. record.i)
  redis.call('HDEL', held_raw_key, record.i)
  -- the id only serves to find a held record (expire_holds): de-duplication has its own
  record.h = nil
  record.i = nil
end

-- kx as a list of experiment ids.
local function entered_experiments(visitor_key)
  local text = redis.call('HGET', visitor_key, 'kx')
  return text and split(text, ',') or {}
end

local function position(list, item)
  for index, existing in ipairs(list) do
    if existing == item then return index end
  end
  return nil
end

-- The visitor's entries in kx order: {experiment, entry text}; position n is xn.
local function entries_of(visitor_key)
  local entries = {}
  for xn, experiment in ipairs(entered_experiments(visitor_key)) do
    entries[xn] = {experiment, redis.call('HGET', visitor_key, 'e' .. xn)}
  end
  return entries
end

-- Whether the visitor has an entry that keeps a conversion with this hold deadline:
-- one applied before the hold clock passed the deadline, into the experiment the
-- conversion names (any, when it names none).
-- entries: entries_of(visitor_key), read once by the caller, which counts with it too.
local function has_entry_within(entries, experiment, deadline)
  for _, entry in ipairs(entries) do
    if experiment == nil or experiment == entry[1] then
      local _, _, _, _, entry_clock = parse_entry(entry[2])
      if entry_clock <= deadline then return true end
    end
  end
  return false
end

-- The outbox entry has the shape of the planner's dead letters (DeadLetterEntry in
-- worker/events/dead_letter.py); held_text is the conversion's SourceRecord.
local function dead_letter_unassigned(held_text)
  redis.call('RPUSH', outbox_key, cjson.encode({kind = 'dead_letter',
    reason = 'no_assignment',
    detail = 'no assignment of this visitor to an experiment was published within the hold time',
    message = cjson.decode(held_text)}))
  stats.dead_lettered = stats.dead_lettered + 1
  stats.conversions_expired = stats.conversions_expired + 1
end

-- kg as a list of {goal, events appended}.
local function goal_counts(visitor_key)
  local goals = {}
  local text = redis.call('HGET', visitor_key, 'kg')
  if text then
    for _, item in ipairs(split(text, ',')) do
      local colon = string.find(item, ':', 1, true)
      goals[#goals + 1] = {string.sub(item, 1, colon - 1), tonumber(string.sub(item, colon + 1))}
    end
  end
  return goals
end

-- Appends a goal event as kG:{n + 1}; goals is goal_counts() with the goal at gn.
local function append_goal_event(visitor_key, goals, gn, record)
  local entry = goals[gn]
  entry[2] = entry[2] + 1
  redis.call('HSET', visitor_key, 'k' .. gn .. ':' .. entry[2], cjson.encode(record))
  local items = {}
  for index, item in ipairs(goals) do items[index] = item[1] .. ':' .. item[2] end
  redis.call('HSET', visitor_key, 'kg', table.concat(items, ','))
end

-- A visit of the entry: counted in `visits` at its own hour the first time it is seen.
-- It also makes V one larger, which adds to V and V^2 and, for every goal the entry has
-- counted events of, to its products with V, all in the entry hour. A new entry
-- (entered_now) has counted no goal event yet: its stored ones are counted after this.
-- row: the entry's row in the experiment's columns (row_of).
local function record_visit(visitor_key, xn, row, experiment, variant, cell, visit, hour,
                            entry_hour, entered_now)
  if redis.call('HSETNX', visitor_key, 'v' .. xn .. ':' .. visit, hour) == 0 then return end
  if row then append_fact(experiment, row, hour) end
  add_counts(experiment, hour, variant, cell, nil, {visits = 1})
  local visits = redis.call('HINCRBY', visitor_key, 'n' .. xn, 1)
  add_counts(experiment, entry_hour, variant, cell, nil, {vc = 1, vc2 = 2 * visits - 1})
  if entered_now then return end
  local goals = goal_counts(visitor_key)
  if #goals == 0 then return end
  local fields = {}
  for gn = 1, #goals do fields[gn] = 's' .. xn .. ':' .. gn end
  local sums = redis.call('HMGET', visitor_key, unpack(fields))
  for gn, goal in ipairs(goals) do
    if sums[gn] then
      local kind, cap = goal_rule(experiment, goal[1])
      local count, revenue, _, converted_visits = parse_sums(sums[gn])
      add_counts(experiment, entry_hour, variant, cell, goal[1], {vcvis = converted_visits,
        vev = capped(count, kind == 'count' and cap or nil),
        vrev = capped(revenue, kind == 'revenue' and cap or nil)})
    end
  end
end

-- Idempotent, so that assignments need no de-duplication: applied again, an
-- assignment finds its experiment in kx and only takes the else branch, where the
-- same variant records no multiple exposure (and another one only the first time,
-- HSETNX) and the same visit exists already (HSETNX). A resend with another timestamp
-- changes nothing either: the entry keeps the first arrival's time and the visit its
-- first hour. Only the hold clock may move, as it did for the original.
local function apply_assignment(c)
  local visitor_key = base .. ':v:' .. c.u
  local experiment = c.x
  local hour = math.floor(c.ts / 3600000)
  local entered = entered_experiments(visitor_key)
  local xn = position(entered, experiment)
  if xn == nil then
    xn = #entered + 1
    entered[xn] = experiment
    redis.call('HSET', visitor_key, 'kx', table.concat(entered, ','))
    local variant, cell = c.v, cell_id(c.c)
    local entry_text = variant .. '|' .. num(c.ts) .. '|' .. cell .. '|' .. num(clock)
    redis.call('HSET', visitor_key, 'e' .. xn, entry_text)
    if c.ctx ~= nil then redis.call('HSET', visitor_key, 'x' .. xn, c.ctx) end
    local row = redis.call('RPUSH', base .. ':ev:' .. experiment, c.u) - 1
    redis.call('HSET', visitor_key, 'r' .. xn, row)
    append_entrant(experiment, variant, c.ts, cell, c.ctx)
    add_counts(experiment, hour, variant, cell, nil, {n = 1})
    record_visit(visitor_key, xn, row, experiment, variant, cell, c.s or '_', hour, hour, true)
    -- Goal events that arrived before this assignment but happened after the entry.
    -- Holds past their deadline were dead-lettered before this entry was made
    -- (advance_clock), so every held record this entry can keep is still within it.
    for gn, entry in ipairs(goal_counts(visitor_key)) do
      for n = 1, entry[2] do
        local field = 'k' .. gn .. ':' .. n
        local record_text = redis.call('HGET', visitor_key, field)
        local record = record_text and cjson.decode(record_text)
        if record then
          if counts_for(experiment, entry_text, record) then
            count_conversion(visitor_key, xn, experiment, entry_text, gn, entry[1], record)
          end
          -- Kept by this entry even when it happened before it (counted nowhere then).
          local released = record.h and (record.x == nil or record.x == experiment)
          if released then
            release_hold(c.u, record)
            redis.call('HSET', visitor_key, field, cjson.encode(record))
          end
          if not record.h and (record.x == nil or record.x == experiment) then
            append_event(experiment, row, entry[1], record)
          end
          if covaries_for(experiment, entry_text, entry[1], record) then
            add_covariate(visitor_key, xn, experiment, entry_text, gn, entry[1], record)
          end
          if released then
            -- settled only now: a covariate of the entries applied before this one too
            for other_xn = 1, xn - 1 do
              local other = entered[other_xn]
              local other_text = redis.call('HGET', visitor_key, 'e' .. other_xn)
              if covaries_for(other, other_text, entry[1], record) then
                add_covariate(visitor_key, other_xn, other, other_text, gn, entry[1], record)
              end
            end
          end
        end
      end
    end
  else
    local variant, _, entry_hour, cell = parse_entry(redis.call('HGET', visitor_key, 'e' .. xn))
    local row = row_of(visitor_key, xn)
    if variant ~= c.v and redis.call('HSETNX', visitor_key, 'm' .. xn, c.v) == 1 then
      if row then append_fact(experiment, row, -1) end
      add_counts(experiment, entry_hour, variant, cell, nil, {me = 1})
    end
    record_visit(visitor_key, xn, row, experiment, variant, cell, c.s or '_', hour, entry_hour,
                 false)
  end
end

-- The smallest hold deadline, read when first needed (false until then).
local next_deadline = false

-- A conversion is kept when the visitor has an entry it can count for, now or once
-- its assignment is read; it is dead-lettered when no such entry was applied before
-- the hold clock passed its deadline (publish time + hold). Deciding by the entry's
-- clock rather than by arrival makes the outcome the same whichever topic is read
-- ahead: an assignment read later than the deadline never keeps it.
local function apply_conversion(c)
  local visitor_key = base .. ':v:' .. c.u
  local deadline = c.p + hold_ms
  local record = {t = c.ts, i = c.id, v = c.val, c = c.cur, x = c.x, s = c.s, a = c.at}
  local entries = entries_of(visitor_key)
  if not has_entry_within(entries, c.x, deadline) then
    if clock > deadline then
      -- The assignments partition was read past the deadline before this conversion.
      dead_letter_unassigned(c.held)
      return
    end
    -- Held: the visitor's assignment may still be read; until then it counts nowhere.
    record.h = 1
    redis.call('ZADD', hold_key, deadline, c.u .. '|' .. c.id)
    redis.call('HSET', held_raw_key, c.id, c.held)
    if next_deadline ~= false and deadline < next_deadline then next_deadline = deadline end
    stats.conversions_held = stats.conversions_held + 1
  else
    record.i = nil
  end
  local goals = goal_counts(visitor_key)
  local gn = nil
  for index, entry in ipairs(goals) do
    if entry[1] == c.g then gn = index end
  end
  if gn == nil then
    gn = #goals + 1
    goals[gn] = {c.g, 0}
  end
  for xn, entry in ipairs(entries) do
    if counts_for(entry[1], entry[2], record) then
      count_conversion(visitor_key, xn, entry[1], entry[2], gn, c.g, record)
    elseif covaries_for(entry[1], entry[2], c.g, record) then
      add_covariate(visitor_key, xn, entry[1], entry[2], gn, c.g, record)
    end
    if not record.h and (record.x == nil or record.x == entry[1]) then
      local row = row_of(visitor_key, xn)
      if row then append_event(entry[1], row, c.g, record) end
    end
  end
  append_goal_event(visitor_key, goals, gn, record)
end

-- Dead-letters the held conversions whose deadline the clock has passed. Every record
-- still held has no entry that keeps it (an entry releases what it keeps), but an
-- entry is checked again all the same.
local function expire_holds()
  local expired = redis.call('ZRANGEBYSCORE', hold_key, '-inf', '(' .. num(clock),
    'WITHSCORES')
  for index = 1, #expired, 2 do
    local member, deadline = expired[index], tonumber(expired[index + 1])
    local bar = string.find(member, '|', 1, true)
    local visitor, event_id = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
    local visitor_key = base .. ':v:' .. visitor
    local held = redis.call('HGET', held_raw_key, event_id)
    if held then
      local held_record = cjson.decode(held)
      local target, target_field, target_gn = nil, nil, nil
      for gn, entry in ipairs(goal_counts(visitor_key)) do
        if entry[1] == held_record.goal then
          for n = 1, entry[2] do
            local field = 'k' .. gn .. ':' .. n
            local record_text = redis.call('HGET', visitor_key, field)
            local record = record_text and cjson.decode(record_text)
            if record and record.i == event_id then
              target, target_field, target_gn = record, field, gn
            end
          end
        end
      end
      local entries = entries_of(visitor_key)
      if not has_entry_within(entries, target and target.x, deadline) then
        dead_letter_unassigned(held)
        if target_field then redis.call('HDEL', visitor_key, target_field) end
      elseif target then
        target.h = nil
        target.i = nil
        redis.call('HSET', visitor_key, target_field, cjson.encode(target))
        for xn, entry in ipairs(entries) do
          if covaries_for(entry[1], entry[2], held_record.goal, target) then
            add_covariate(visitor_key, xn, entry[1], entry[2], target_gn, held_record.goal,
              target)
          end
        end
      end
    end
    redis.call('ZREM', hold_key, member)
    redis.call('HDEL', held_raw_key, event_id)
  end
end

-- Moves the hold clock to a record of the assignments topic published at `published`,
-- first dead-lettering what it passes: before the record is applied, so an assignment
-- published after a conversion's deadline never keeps it.
local function earliest_deadline()
  local first = redis.call('ZRANGE', hold_key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or math.huge
end

local function advance_clock(published)
  if published <= clock then return end
  clock = published
  if next_deadline == false then next_deadline = earliest_deadline() end
  if clock > next_deadline then
    expire_holds()
    next_deadline = earliest_deadline()
  end
end

for _, c in ipairs(commands) do
  if c.o <= applied_offset(c.t) then
    stats.replayed = stats.replayed + 1
  else
    applied_offsets[c.t] = c.o
    -- Every record of the assignments topic moves the clock, counted or not: the
    -- clock is how far that partition has been read.
    if c.t == assignments_topic then advance_clock(c.p) end
    if c.k == 'a' or c.k == 'c' then
      -- Assignments are not de-duplicated: applying one again changes nothing (see
      -- apply_assignment), and their ids would take as much memory as the rest of the
      -- de-duplication sets. Conversions add to counts, so theirs are remembered.
      if c.k == 'c' and is_duplicate(c.id, c.ts) then
        stats.duplicates = stats.duplicates + 1
      elseif c.k == 'a' then
        apply_assignment(c)
        stats.applied = stats.applied + 1
      else
        apply_conversion(c)
        stats.applied = stats.applied + 1
      end
    elseif c.k == 'd' then
      redis.call('RPUSH', outbox_key, c.out)
      stats.dead_lettered = stats.dead_lettered + 1
    elseif c.k == 'f' then
      redis.call('RPUSH', outbox_key, c.out)
      stats.forwarded = stats.forwarded + 1
    end
  end
end

for topic, offset in pairs(applied_offsets) do
  redis.call('HSET', offsets_key, topic, offset)
end
for key, expire_at in pairs(dedup_expiry) do
  redis.call('EXPIREAT', key, expire_at)
end
redis.call('SET', base .. ':wm', num(clock))
write_counters()
write_columns()

for name, value in pairs(stats) do
  if value > 0 then redis.call('HINCRBY', base .. ':stats', name, value) end
end
stats.outbox = redis.call('LLEN', outbox_key)
return cjson.encode(stats)

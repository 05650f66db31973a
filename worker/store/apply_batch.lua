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
-- A partition written by an earlier layout cannot be applied to until `python -m worker
-- migrate` has converted it: it has applied offsets but no "{base}:vb" (a hash per
-- visitor, "{base}:v:{visitor}"), or a "{base}:vb" without c = COLUMNS_LAYOUT (whole
-- column strings, an entrants list "{base}:ev:{experiment}", the entry's own visit
-- written as a fact).
local COLUMNS_LAYOUT = '2'
local layout = redis.call('HGET', base .. ':vb', 'c')
if layout ~= COLUMNS_LAYOUT then
  if redis.call('EXISTS', base .. ':vb') == 1 or redis.call('HLEN', offsets_key) > 0 then
    return cjson.encode({legacy_layout = true})
  end
  redis.call('HSET', base .. ':vb', 'L', 0, 's', 0, 'n', 0, 'c', COLUMNS_LAYOUT)
end
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
-- what the scans need, appended per experiment as fixed-width little-endian records in
-- segments of SEGMENT_RECORDS, so a reader fetches it in a few large GETs and decodes it
-- with numpy:
--   "{base}:xe:{segment}:{experiment}"  entrants, 20 bytes each; a record's position is
--                             the visitor's row: variant (string id), entry ms (double),
--                             cell id, extended context JSON (string id, 0: none)
--   "{base}:xf:{segment}:{experiment}"  later facts about a visitor, 8 bytes: row, then
--                             the hour of a visit's first exposure, or -1 for a multiple
--                             exposure; the entry's own visit, at the entry hour, is
--                             implied by the entrant record and not written
--   "{base}:xg:{segment}:{experiment}"  goal events that may count for the experiment,
--                             40 bytes: row, goal (string id), time ms (double), revenue
--                             (double, NaN without), visit (id in "{base}:vid", identity
--                             only), the experiment it is restricted to, its attributes
--                             JSON, its currency (string ids, 0: none)
--   "{base}:xn:{experiment}"  hash e, f, g: the records each column holds
-- Strings are interned per partition in "{base}:str" (text -> id, ids 1, 2, ... given in
-- order, so the next is HLEN + 1), visit ids in "{base}:vid" the same way; the visitor
-- state keeps the row of each entry. An event is appended to an experiment when it
-- is applied (for the entries the visitor has) or when the visitor enters (the events
-- stored before), and only settled: a held event has no entry it may count for (it
-- would not be held), an entry that may count it releases it before appending it, and a
-- hold that expires dead-letters an event no column holds. So no record is ever
-- rewritten: the store is append-only. Appends are gathered per column and written once
-- when the batch ends (write_columns). Segments bound what APPEND reserves: it doubles a
-- string (then adds 1 MB past 1 MB), so one string per column kept up to 1 MB unused
-- per partition and column; a full segment is written whole, with nothing reserved.
local NO_VALUE = 0 / 0
local SEGMENT_RECORDS = 4095
local COLUMN_KEYS = {e = base .. ':xe:', f = base .. ':xf:', g = base .. ':xg:'}
-- experiment -> {e = records stored, f = ..., g = ..., pending = {e = {...}, ...}}
local columns = {}
local function columns_of(experiment)
  local found = columns[experiment]
  if found == nil then
    local stored = redis.call('HMGET', base .. ':xn:' .. experiment, 'e', 'f', 'g')
    found = {e = tonumber(stored[1] or '0'), f = tonumber(stored[2] or '0'),
             g = tonumber(stored[3] or '0'), pending = {e = {}, f = {}, g = {}}}
    columns[experiment] = found
  end
  return found
end

local function append_record(experiment, column, record)
  local pending = columns_of(experiment).pending[column]
  pending[#pending + 1] = record
end

-- The row the experiment's next entrant takes.
local function next_row(experiment)
  local found = columns_of(experiment)
  return found.e + #found.pending.e
end

local function write_column(experiment, column, stored, records)
  local at = 1
  while at <= #records do
    local segment = math.floor(stored / SEGMENT_RECORDS)
    local filled = stored % SEGMENT_RECORDS
    local take = math.min(SEGMENT_RECORDS - filled, #records - at + 1)
    local key = COLUMN_KEYS[column] .. segment .. ':' .. experiment
    local piece = table.concat(records, '', at, at + take - 1)
    if filled + take < SEGMENT_RECORDS then
      redis.call('APPEND', key, piece)
    elseif filled == 0 then
      redis.call('SET', key, piece)
    else
      -- Completed: written anew at its exact size, without APPEND's reserve.
      redis.call('SET', key, redis.call('GET', key) .. piece)
    end
    stored = stored + take
    at = at + take
  end
  return stored
end

local function write_columns()
  for experiment, found in pairs(columns) do
    local counts = {}
    for _, column in ipairs({'e', 'f', 'g'}) do
      local records = found.pending[column]
      if #records > 0 then
        counts[#counts + 1] = column
        counts[#counts + 1] = write_column(experiment, column, found[column], records)
      end
    end
    if #counts > 0 then redis.call('HSET', base .. ':xn:' .. experiment, unpack(counts)) end
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

-- context: the extended context's string id (0: none).
local function append_entrant(experiment, variant, entry_ms, cell, context)
  append_record(experiment, 'e', struct.pack('<I4dI4I4', string_id(variant),
    entry_ms, tonumber(cell), context))
end

-- hour: the visit's first-exposure hour; -1: a multiple exposure.
local function append_fact(experiment, row, hour)
  append_record(experiment, 'f', struct.pack('<I4i4', row, hour))
end

-- record: a goal event of the visitor state (its visit, attributes and currency are ids).
local function append_event(experiment, row, goal, record)
  append_record(experiment, 'g', struct.pack('<I4I4ddI4I4I4I4', row,
    string_id(goal), record.t, record.v or NO_VALUE, record.s, string_id(record.x),
    record.a or 0, record.c or 0))
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

-- Per-visitor state (DESIGN.md section 4): no key per visitor. A visitor's state is one
-- packed binary value in a bucket hash "{base}:vs:{bucket}", field = visitor id, so a
-- bucket of a few dozen visitors stays listpack-encoded (Redis' default limit of 128
-- fields; the local Redis allows values up to 512 bytes) and costs no per-key overhead
-- per visitor. Buckets grow by linear hashing: with level L and split pointer S (hash
-- "{base}:vb", fields L, s, and n, the visitors stored), a visitor whose hash h (the
-- first 32 bits of its id's SHA-1) gives b = h mod 2^L goes to bucket b, or to
-- h mod 2^(L+1) when b < S. Whenever the visitors outgrow BUCKET_LOAD per bucket, bucket
-- S is split into S and S + 2^L, so a bucket's size stays bounded however many visitors
-- come, and only one bucket's fields move at a time. The states are read once per batch
-- and written back once when it ends (write_visitors), like the counters.
--
-- Experiment, variant and goal names are interned per partition in "{base}:nm" both ways
-- (fields "t{name}" -> id and "i{id}" -> name; "#": the last id given); strings the
-- columns name (currencies, attributes) are ids of "{base}:str" and visits ids of
-- "{base}:vid" (see the columnar visitor store). A state is, in order (uint: unsigned
-- LEB128 varint; int: zig-zag varint; amount: see put_amount;
-- worker/store/visitor_records.py decodes it):
--   uint entries, then per entry (in entry order; its position is xn):
--     uint experiment name id, uint variant name id, int entry ms, uint cell id,
--     uint extended context string id (0: none), int hold clock when the entry was
--     applied minus entry ms (the clock decides whether the entry came within a
--     conversion's hold), uint row in the experiment's columns + 1 (0: none), uint
--     visits, uint multiple exposure (0/1), uint visits seen, then per visit its visit
--     id and int first-exposure hour minus entry hour, uint goals with counted events,
--     then per such goal: uint gn (the goal's position below), uint flags (1: revenue,
--     2: CUPED pre-period sums), uint raw count, [amount raw revenue], uint orders,
--     uint converted visits and their visit ids, [uint pre-period count, amount
--     pre-period revenue]
--   uint goals, then per goal (in first-event order; its position is gn):
--     uint goal name id, uint events, then per event (in arrival order): uint flags
--     (1: revenue, 2: currency, 4: restricted to one experiment, 8: attributes, 16:
--     held), int time ms minus the first entry's ms (0 without entries), uint visit
--     id, [amount revenue], [uint currency string id], [uint experiment name id],
--     [uint attributes string id], [uint length, held event id]
-- Raw sums are kept before any cap, so the counted values do not depend on the order of
-- the events. A held event is dead-lettered when its hold expires and then removed.
local names_key = base .. ':nm'
local name_ids, id_names = {}, {}
local function name_id(text)
  local id = name_ids[text]
  if id == nil then
    id = redis.call('HGET', names_key, 't' .. text)
    if id then
      id = tonumber(id)
    else
      id = redis.call('HINCRBY', names_key, '#', 1)
      redis.call('HSET', names_key, 't' .. text, id, 'i' .. id, text)
    end
    name_ids[text] = id
    id_names[id] = text
  end
  return id
end

local function name_of(id)
  local text = id_names[id]
  if text == nil then
    text = redis.call('HGET', names_key, 'i' .. id)
    id_names[id] = text
    name_ids[text] = id
  end
  return text
end

-- The encoder gathers byte values, not strings, and makes one string of them at the
-- end: one string per byte cost more than the rest of the batch.
local function put_uint(out, n)
  while n >= 128 do
    out[#out + 1] = n % 128 + 128
    n = math.floor(n / 128)
  end
  out[#out + 1] = n
end

local function put_int(out, n)
  if n >= 0 then put_uint(out, 2 * n) else put_uint(out, -2 * n - 1) end
end

local function put_bytes(out, text)
  local size = #out
  for index = 1, #text do out[size + index] = string.byte(text, index) end
end

-- An amount (revenue): a whole number of cents when that reads back as the same
-- double (2 * zig-zag(cents), even), else 1 and the 8-byte double; "16.92" takes 2
-- bytes, not 8.
local function put_amount(out, x)
  local cents = math.floor(x * 100 + 0.5)
  if cents / 100 == x and math.abs(cents) < 2 ^ 50 then
    if cents >= 0 then put_uint(out, 4 * cents) else put_uint(out, -4 * cents - 2) end
  else
    put_uint(out, 1)
    put_bytes(out, struct.pack('<d', x))
  end
end

local function put_list(out, items)
  put_uint(out, #items)
  for _, item in ipairs(items) do put_uint(out, item) end
end

-- Lua's unpack() is bounded by its C stack: a long state is made in pieces.
local BYTES_PER_CHAR_CALL = 4000
local function bytes_text(out)
  if #out <= BYTES_PER_CHAR_CALL then return string.char(unpack(out)) end
  local parts = {}
  for start = 1, #out, BYTES_PER_CHAR_CALL do
    parts[#parts + 1] = string.char(unpack(out, start, math.min(start + BYTES_PER_CHAR_CALL - 1, #out)))
  end
  return table.concat(parts)
end

-- Decoding reads the state's bytes into a table once; each reader takes a position
-- and returns the value and the next position.
local function get_uint(bytes, at)
  local n, scale = 0, 1
  while true do
    local byte = bytes[at]
    at = at + 1
    if byte < 128 then return n + byte * scale, at end
    n = n + (byte - 128) * scale
    scale = scale * 128
  end
end

local function get_int(bytes, at)
  local z
  z, at = get_uint(bytes, at)
  if z % 2 == 0 then return z / 2, at end
  return -(z + 1) / 2, at
end

local function get_list(bytes, at)
  local items, count = {}, nil
  count, at = get_uint(bytes, at)
  for index = 1, count do items[index], at = get_uint(bytes, at) end
  return items, at
end

local function byte_values(data)
  if #data <= BYTES_PER_CHAR_CALL then return {string.byte(data, 1, -1)} end
  local bytes = {}
  for start = 1, #data, BYTES_PER_CHAR_CALL do
    local piece = {string.byte(data, start, math.min(start + BYTES_PER_CHAR_CALL - 1, #data))}
    for index = 1, #piece do bytes[start + index - 1] = piece[index] end
  end
  return bytes
end

-- Whether a flag's bit is set in flags.
local function has(flags, bit)
  return flags % (2 * bit) >= bit
end

-- A state's entries: {x = experiment, v = variant, ms, cell (id), ctx (context string id,
-- 0: none), clock, row (nil: none), visits, me (multiple exposure), seen = {visit ids},
-- hours = {their first-exposure hours}, sums = {[gn] = {count, revenue, orders, visits =
-- {converted visit ids}, pre = nil or {count, revenue}}}}; its goals: {name, events =
-- {record}}, a record {t, v (revenue or nil), c (currency string id or nil), x
-- (experiment or nil), s (visit id), a (attributes string id or nil), h (held), i (held:
-- event id)}.
local function decode_state(data)
  local bytes = byte_values(data)
  local at = 1
  local value, count
  local function uint()
    value, at = get_uint(bytes, at)
    return value
  end
  local function int()
    value, at = get_int(bytes, at)
    return value
  end
  local function amount()
    local code = uint()
    if code % 2 == 1 then
      value = struct.unpack('<d', data, at)
      at = at + 8
      return value
    end
    code = code / 2
    if code % 2 == 0 then return code / 2 / 100 end
    return -(code + 1) / 2 / 100
  end
  local state = {entries = {}, goals = {}}
  for xn = 1, uint() do
    local entry = {x = name_of(uint()), v = name_of(uint()), ms = int(), cell = uint(),
                   ctx = uint()}
    entry.clock = entry.ms + int()
    local row = uint()
    if row > 0 then entry.row = row - 1 end
    entry.visits = uint()
    entry.me = uint() == 1
    entry.seen, entry.hours = {}, {}
    local entry_hour = math.floor(entry.ms / 3600000)
    for index = 1, uint() do
      entry.seen[index] = uint()
      entry.hours[index] = entry_hour + int()
    end
    entry.sums = {}
    for _ = 1, uint() do
      local gn, flags = uint(), uint()
      local sums = {count = uint(), revenue = 0}
      if has(flags, 1) then sums.revenue = amount() end
      sums.orders = uint()
      sums.visits, at = get_list(bytes, at)
      if has(flags, 2) then sums.pre = {count = uint(), revenue = amount()} end
      entry.sums[gn] = sums
    end
    state.entries[xn] = entry
  end
  -- event times are kept relative to the first entry (absolute without one)
  local base_ms = state.entries[1] and state.entries[1].ms or 0
  for gn = 1, uint() do
    local goal = {name = name_of(uint()), events = {}}
    for n = 1, uint() do
      local flags = uint()
      local record = {t = base_ms + int(), s = uint()}
      if has(flags, 1) then record.v = amount() end
      if has(flags, 2) then record.c = uint() end
      if has(flags, 4) then record.x = name_of(uint()) end
      if has(flags, 8) then record.a = uint() end
      if has(flags, 16) then
        record.h = 1
        count = uint()
        record.i = string.sub(data, at, at + count - 1)
        at = at + count
      end
      goal.events[n] = record
    end
    state.goals[gn] = goal
  end
  return state
end

local function encode_state(state)
  local out = {}
  put_uint(out, #state.entries)
  for _, entry in ipairs(state.entries) do
    put_uint(out, name_id(entry.x))
    put_uint(out, name_id(entry.v))
    put_int(out, entry.ms)
    put_uint(out, tonumber(entry.cell))
    put_uint(out, entry.ctx)
    put_int(out, entry.clock - entry.ms)
    put_uint(out, entry.row and entry.row + 1 or 0)
    put_uint(out, entry.visits)
    put_uint(out, entry.me and 1 or 0)
    put_uint(out, #entry.seen)
    local entry_hour = math.floor(entry.ms / 3600000)
    for index, visit in ipairs(entry.seen) do
      put_uint(out, visit)
      put_int(out, entry.hours[index] - entry_hour)
    end
    local goals = {}
    for gn in pairs(entry.sums) do goals[#goals + 1] = gn end
    table.sort(goals)
    put_uint(out, #goals)
    for _, gn in ipairs(goals) do
      local sums = entry.sums[gn]
      put_uint(out, gn)
      put_uint(out, (sums.revenue ~= 0 and 1 or 0) + (sums.pre and 2 or 0))
      put_uint(out, sums.count)
      if sums.revenue ~= 0 then put_amount(out, sums.revenue) end
      put_uint(out, sums.orders)
      put_list(out, sums.visits)
      if sums.pre then
        put_uint(out, sums.pre.count)
        put_amount(out, sums.pre.revenue)
      end
    end
  end
  local base_ms = state.entries[1] and state.entries[1].ms or 0
  put_uint(out, #state.goals)
  for _, goal in ipairs(state.goals) do
    put_uint(out, name_id(goal.name))
    put_uint(out, #goal.events)
    for _, record in ipairs(goal.events) do
      put_uint(out, (record.v and 1 or 0) + (record.c and 2 or 0) + (record.x and 4 or 0)
        + (record.a and 8 or 0) + (record.h and 16 or 0))
      put_int(out, record.t - base_ms)
      put_uint(out, record.s)
      if record.v then put_amount(out, record.v) end
      if record.c then put_uint(out, record.c) end
      if record.x then put_uint(out, name_id(record.x)) end
      if record.a then put_uint(out, record.a) end
      if record.h then
        put_uint(out, #record.i)
        put_bytes(out, record.i)
      end
    end
  end
  return bytes_text(out)
end

local buckets_key = base .. ':vb'
local bucket_stem = base .. ':vs:'
-- Visitors per bucket before one more split: with linear hashing a bucket not yet split
-- in this round holds up to about twice as many, still under the 128-field limit.
local BUCKET_LOAD = 40
local bucket_level, bucket_split, visitors_stored = nil, nil, nil
-- visitor -> {state, bucket, stored (it had a state before this batch), dirty}
local visitor_cache = {}

local function visitor_hash(visitor)
  return tonumber(string.sub(redis.sha1hex(visitor), 1, 8), 16)
end

local function visitor_of(visitor)
  local item = visitor_cache[visitor]
  if item == nil then
    if bucket_level == nil then
      local stored = redis.call('HMGET', buckets_key, 'L', 's', 'n')
      bucket_level = tonumber(stored[1] or '0')
      bucket_split = tonumber(stored[2] or '0')
      visitors_stored = tonumber(stored[3] or '0')
    end
    local hash = visitor_hash(visitor)
    local bucket = hash % 2 ^ bucket_level
    if bucket < bucket_split then bucket = hash % 2 ^ (bucket_level + 1) end
    local data = redis.call('HGET', bucket_stem .. bucket, visitor)
    item = {bucket = bucket, stored = data ~= false, dirty = false}
    item.state = data and decode_state(data) or {entries = {}, goals = {}}
    visitor_cache[visitor] = item
  end
  return item
end

-- The state of a visitor, to read; changed() marks it to be written back.
local function state_of(visitor)
  return visitor_of(visitor).state
end

local function changed(visitor)
  visitor_of(visitor).dirty = true
end

-- Moves the visitors of bucket S whose hash names bucket S + 2^L there.
local function split_bucket()
  local source = bucket_stem .. bucket_split
  local target = bucket_split + 2 ^ bucket_level
  local listed = redis.call('HGETALL', source)
  local moved, names = {}, {}
  for index = 1, #listed, 2 do
    if visitor_hash(listed[index]) % 2 ^ (bucket_level + 1) == target then
      moved[#moved + 1] = listed[index]
      moved[#moved + 1] = listed[index + 1]
      names[#names + 1] = listed[index]
    end
  end
  if #names > 0 then
    redis.call('HSET', bucket_stem .. target, unpack(moved))
    redis.call('HDEL', source, unpack(names))
  end
  bucket_split = bucket_split + 1
  if bucket_split == 2 ^ bucket_level then
    bucket_level = bucket_level + 1
    bucket_split = 0
  end
end

-- Writes back the states this batch changed, bucket by bucket, then splits buckets
-- while the visitors outgrow them. A state with neither entries nor goal events (its
-- only event was dead-lettered) is removed.
local function write_visitors()
  if bucket_level == nil then return end
  local writes, removals = {}, {}
  for visitor, item in pairs(visitor_cache) do
    if item.dirty then
      local state = item.state
      local empty = #state.entries == 0
      for _, goal in ipairs(state.goals) do
        if #goal.events > 0 then empty = false end
      end
      if empty then
        if item.stored then
          local listed = removals[item.bucket] or {}
          removals[item.bucket] = listed
          listed[#listed + 1] = visitor
          visitors_stored = visitors_stored - 1
        end
      else
        local listed = writes[item.bucket] or {}
        writes[item.bucket] = listed
        listed[#listed + 1] = visitor
        listed[#listed + 1] = encode_state(state)
        if not item.stored then visitors_stored = visitors_stored + 1 end
      end
    end
  end
  for bucket, listed in pairs(writes) do
    for start = 1, #listed, 2 * FIELDS_PER_CALL do
      redis.call('HSET', bucket_stem .. bucket,
        unpack(listed, start, math.min(start + 2 * FIELDS_PER_CALL - 1, #listed)))
    end
  end
  for bucket, listed in pairs(removals) do
    redis.call('HDEL', bucket_stem .. bucket, unpack(listed))
  end
  while visitors_stored > BUCKET_LOAD * (2 ^ bucket_level + bucket_split) do split_bucket() end
  redis.call('HSET', buckets_key, 'L', bucket_level, 's', bucket_split, 'n', visitors_stored)
end

-- The position of item in list (nil: absent).
local function position(list, item)
  for index, existing in ipairs(list) do
    if existing == item then return index end
  end
  return nil
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

-- Counts one goal event of a visitor for one experiment the visitor had entered: entry
-- is its entry (of the state's entries), gn the goal's position in the state's goals.
local function count_conversion(entry, gn, goal, record)
  local experiment = entry.x
  local kind, cap = goal_rule(experiment, goal)
  local sums = entry.sums[gn]
  if sums == nil then
    sums = {count = 0, revenue = 0, orders = 0, visits = {}}
    entry.sums[gn] = sums
  end
  local count, revenue, orders = sums.count, sums.revenue, sums.orders
  local visits = entry.visits
  local value = record.v
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
  if not position(sums.visits, record.s) then
    local converted_visits = #sums.visits
    deltas.cvis = 1
    deltas.cvis2 = 2 * converted_visits + 1
    deltas.vcvis = visits
    sums.visits[converted_visits + 1] = record.s
  end
  if sums.pre and kind ~= nil then
    -- CUPED: Y grows while the covariate X is set (add_covariate grows X while Y is set)
    local covariate = scale_value(kind, cap, sums.pre.count, sums.pre.revenue)
    local _, step = scale_step(kind, cap, count, revenue, value)
    deltas.xy = covariate * step
  end
  sums.count = count + 1
  if value ~= nil then
    sums.revenue = revenue + value
    sums.orders = orders + 1
  end
  add_counts(experiment, math.floor(entry.ms / 3600000), entry.v, entry.cell, goal, deltas)
end

local function counts_for(entry, record)
  if entry == nil or frozen[entry.x] then return false end
  if record.x ~= nil and record.x ~= entry.x then return false end
  return record.t >= entry.ms
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
local function covaries_for(entry, goal, record)
  if entry == nil or frozen[entry.x] or record.h then return false end
  if record.x ~= nil and record.x ~= entry.x then return false end
  local experiment_rules = rules[entry.x]
  if experiment_rules == nil or experiment_rules.cuped_ms == 0
      or experiment_rules.goals[goal] == nil then
    return false
  end
  return record.t < entry.ms and record.t >= entry.ms - experiment_rules.cuped_ms
end

-- Adds a goal event to the visitor's covariate X of one entry (covaries_for said so).
local function add_covariate(entry, gn, goal, record)
  local experiment = entry.x
  local kind, cap = goal_rule(experiment, goal)
  local sums = entry.sums[gn]
  if sums == nil then
    sums = {count = 0, revenue = 0, orders = 0, visits = {}}
    entry.sums[gn] = sums
  end
  local pre = sums.pre or {count = 0, revenue = 0}
  local value = record.v
  local before, step = scale_step(kind, cap, pre.count, pre.revenue, value)
  sums.pre = {count = pre.count + 1, revenue = pre.revenue + (value or 0)}
  if step ~= 0 then
    add_counts(experiment, math.floor(entry.ms / 3600000), entry.v, entry.cell, goal,
      {x = step, x2 = 2 * before * step + step * step,
       xy = step * scale_value(kind, cap, sums.count, sums.revenue)})
  end
end

local function release_hold(visitor, record)
  redis.call('ZREM', hold_key, visitor .. '|' .. record.i)
  redis.call('HDEL', held_raw_key, record.i)
  -- the id only serves to find a held record (expire_holds): de-duplication has its own
  record.h = nil
  record.i = nil
end

-- Whether the visitor has an entry that keeps a conversion with this hold deadline:
-- one applied before the hold clock passed the deadline, into the experiment the
-- conversion names (any, when it names none).
local function has_entry_within(entries, experiment, deadline)
  for _, entry in ipairs(entries) do
    if (experiment == nil or experiment == entry.x) and entry.clock <= deadline then
      return true
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

-- A visit of the entry: counted in `visits` at its own hour the first time it is seen.
-- It also makes V one larger, which adds to V and V^2 and, for every goal the entry has
-- counted events of, to its products with V, all in the entry hour. A new entry has
-- counted no goal event yet: its stored ones are counted after this. The entry's own
-- visit (the first) needs no fact record: its entrant record implies it.
local function record_visit(state, entry, visit, hour)
  if position(entry.seen, visit) then return end
  entry.seen[#entry.seen + 1] = visit
  entry.hours[#entry.hours + 1] = hour
  local experiment, variant, cell = entry.x, entry.v, entry.cell
  local entry_hour = math.floor(entry.ms / 3600000)
  if entry.row and #entry.seen > 1 then append_fact(experiment, entry.row, hour) end
  add_counts(experiment, hour, variant, cell, nil, {visits = 1})
  entry.visits = entry.visits + 1
  add_counts(experiment, entry_hour, variant, cell, nil, {vc = 1, vc2 = 2 * entry.visits - 1})
  for gn, sums in pairs(entry.sums) do
    if sums.count > 0 then
      local goal = state.goals[gn].name
      local kind, cap = goal_rule(experiment, goal)
      add_counts(experiment, entry_hour, variant, cell, goal, {vcvis = #sums.visits,
        vev = capped(sums.count, kind == 'count' and cap or nil),
        vrev = capped(sums.revenue, kind == 'revenue' and cap or nil)})
    end
  end
end

-- Idempotent, so that assignments need no de-duplication: applied again, an
-- assignment finds its experiment among the entries and only takes the else branch,
-- where the same variant records no multiple exposure (and another one only the first
-- time) and the same visit is seen already. A resend with another timestamp changes
-- nothing either: the entry keeps the first arrival's time and the visit its first
-- hour. Only the hold clock may move, as it did for the original.
local function apply_assignment(c)
  local state = state_of(c.u)
  local experiment = c.x
  local hour = math.floor(c.ts / 3600000)
  local visit = visit_id(c.s or '_')
  local entries = state.entries
  local xn = nil
  for index, entry in ipairs(entries) do
    if entry.x == experiment then xn = index end
  end
  changed(c.u)
  if xn == nil then
    xn = #entries + 1
    local cell = cell_id(c.c)
    local row = next_row(experiment)
    local entry = {x = experiment, v = c.v, ms = c.ts, cell = cell, ctx = string_id(c.ctx),
                   clock = clock, row = row, visits = 0, me = false, seen = {}, hours = {},
                   sums = {}}
    entries[xn] = entry
    append_entrant(experiment, c.v, c.ts, cell, entry.ctx)
    add_counts(experiment, hour, c.v, cell, nil, {n = 1})
    record_visit(state, entry, visit, hour)
    -- Goal events that arrived before this assignment but happened after the entry.
    -- Holds past their deadline were dead-lettered before this entry was made
    -- (advance_clock), so every held record this entry can keep is still within it.
    for gn, goal in ipairs(state.goals) do
      for _, record in ipairs(goal.events) do
        if counts_for(entry, record) then count_conversion(entry, gn, goal.name, record) end
        -- Kept by this entry even when it happened before it (counted nowhere then).
        local released = record.h and (record.x == nil or record.x == experiment)
        if released then release_hold(c.u, record) end
        if not record.h and (record.x == nil or record.x == experiment) then
          append_event(experiment, row, goal.name, record)
        end
        if covaries_for(entry, goal.name, record) then
          add_covariate(entry, gn, goal.name, record)
        end
        if released then
          -- settled only now: a covariate of the entries applied before this one too
          for other_xn = 1, xn - 1 do
            if covaries_for(entries[other_xn], goal.name, record) then
              add_covariate(entries[other_xn], gn, goal.name, record)
            end
          end
        end
      end
    end
  else
    local entry = entries[xn]
    if entry.v ~= c.v and not entry.me then
      entry.me = true
      if entry.row then append_fact(experiment, entry.row, -1) end
      add_counts(experiment, math.floor(entry.ms / 3600000), entry.v, entry.cell, nil, {me = 1})
    end
    record_visit(state, entry, visit, hour)
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
  local state = state_of(c.u)
  local deadline = c.p + hold_ms
  -- carried as text: cjson would keep only 14 significant digits of a number
  local record = {t = c.ts, v = c.val ~= nil and tonumber(c.val) or nil, x = c.x,
                  s = visit_id(c.s or '_'),
                  c = c.cur ~= nil and string_id(c.cur) or nil,
                  a = c.at ~= nil and string_id(cjson.encode(c.at)) or nil}
  local entries = state.entries
  if not has_entry_within(entries, c.x, deadline) then
    if clock > deadline then
      -- The assignments partition was read past the deadline before this conversion.
      dead_letter_unassigned(c.held)
      return
    end
    -- Held: the visitor's assignment may still be read; until then it counts nowhere.
    record.h = 1
    record.i = c.id
    redis.call('ZADD', hold_key, deadline, c.u .. '|' .. c.id)
    redis.call('HSET', held_raw_key, c.id, c.held)
    if next_deadline ~= false and deadline < next_deadline then next_deadline = deadline end
    stats.conversions_held = stats.conversions_held + 1
  end
  changed(c.u)
  local gn = nil
  for index, goal in ipairs(state.goals) do
    if goal.name == c.g then gn = index end
  end
  if gn == nil then
    gn = #state.goals + 1
    state.goals[gn] = {name = c.g, events = {}}
  end
  for _, entry in ipairs(entries) do
    if counts_for(entry, record) then
      count_conversion(entry, gn, c.g, record)
    elseif covaries_for(entry, c.g, record) then
      add_covariate(entry, gn, c.g, record)
    end
    if not record.h and (record.x == nil or record.x == entry.x) and entry.row then
      append_event(entry.x, entry.row, c.g, record)
    end
  end
  local events = state.goals[gn].events
  events[#events + 1] = record
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
    local held = redis.call('HGET', held_raw_key, event_id)
    if held then
      local held_record = cjson.decode(held)
      local state = state_of(visitor)
      local target, target_gn, target_n = nil, nil, nil
      for gn, goal in ipairs(state.goals) do
        if goal.name == held_record.goal then
          for n, record in ipairs(goal.events) do
            if record.i == event_id then target, target_gn, target_n = record, gn, n end
          end
        end
      end
      changed(visitor)
      if not has_entry_within(state.entries, target and target.x, deadline) then
        dead_letter_unassigned(held)
        if target then table.remove(state.goals[target_gn].events, target_n) end
      elseif target then
        target.h = nil
        target.i = nil
        for _, entry in ipairs(state.entries) do
          if covaries_for(entry, held_record.goal, target) then
            add_covariate(entry, target_gn, held_record.goal, target)
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
write_visitors()
write_counters()
write_columns()

for name, value in pairs(stats) do
  if value > 0 then redis.call('HINCRBY', base .. ':stats', name, value) end
end
stats.outbox = redis.call('LLEN', outbox_key)
return cjson.encode(stats)

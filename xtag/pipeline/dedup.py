"""The messageIds xtag has seen, per site, for 48 hours, in Redis: the
worker checks and claims a read's in one script run.

MessageIds, in about 24 bytes each (a key per id took about 200). A claim is
a messageId's 64-bit fingerprint -> its owner tag (the inbox entry that
claimed it, exactly: the entry id's time and sequence in one integer), kept
in small hashes that Redis stores as compact listpacks. A site's claims go
to its open segment: `slots` hashes (by fingerprint), sized for about 64
claims each over SPAN_SECONDS at the rate the site had; a slot never holds
more than 128 (Redis's default hash-max-listpack-entries): a full slot or a
span's end opens the next segment. Each slot expires 48 hours after its last
write, so a claim is kept 48 to 54 hours. One Lua call checks and claims a
read's messageIds: per messageId one HGET per live segment (about 9), and
the claim.

Window: an entry received (its id's time) less than 48 hours after the
owner's is a duplicate; the owner itself is not, so an inbox entry read
again after a crash still owns its messageIds and keeps its events
forwarded. Tags are exact while a stream adds fewer than 4,096 entries in
one millisecond, and a site's entries share one stream.

Collisions: a new messageId is taken for a duplicate only when its
fingerprint equals one of the n claims its site holds, with probability at
most n / 2**64, where n <= the site's events/s * 54 h. At 1,000 events/s
for one site, n = 1.94e8: 1.05e-11 per event, 9.1e-4 a day (one lost event
in about 3 years); at 100/s, one in about 300 years. A deployment's rate is
the sum over its sites, each with its own n.
"""

from __future__ import annotations

import hashlib

import redis

from xtag.pipeline import queues

DEDUP_SECONDS = 48 * 3600
DEDUP_PREFIX = "xtag:dedup:"
SPAN_SECONDS = 6 * 3600  # a segment takes new claims this long at most
SLOT_FILL = 64  # claims per slot a new segment is sized for
SLOT_MAX = 128  # Redis's default hash-max-listpack-entries: a slot never holds more
OWNER_EPOCH_MS = 1_767_225_600_000  # 2026-01-01 UTC
OWNER_SEQ = 4096  # an owner tag is (ms - OWNER_EPOCH_MS) * OWNER_SEQ + (seq % OWNER_SEQ)
CHECKS_PER_CALL = 250  # messageIds per script run: Redis serves others in between

# Redis time (TIME) runs the segments; entry times (in the owner tags) decide the window.
# A site's meta hash holds 'c' (claims in the open segment) and, per segment n, its
# 'slots:start:stop' (stop 0 while open). Slot keys are <meta>:<n>:<i>, i = idx % slots.
# ARGV: prefix, window ms, span s, fill, slot max, ttl s, OWNER_SEQ, then per messageId: site,
# fingerprint, idx, owner tag. Returns 1 per duplicate, 0 per messageId its entry owns.
_CLAIM = """
local now = tonumber(redis.call('TIME')[1])
local prefix, window, span, fill = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local slot_max, ttl, seq = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local sites, touched, verdicts = {}, {}, {}

local function open(st, n, slots)
  local seg = {n = n, slots = slots, start = now, stop = 0, key = st.meta .. ':' .. n .. ':'}
  table.insert(st.segs, seg)
  st.cur, st.count = seg, 0
  redis.call('HSET', st.meta, n, slots .. ':' .. now .. ':0')
end

local function close(st)
  local cur = st.cur
  cur.stop = now
  redis.call('HSET', st.meta, cur.n, cur.slots .. ':' .. cur.start .. ':' .. now)
  local rate = st.count / math.max(now - cur.start, 60)  -- sized for a span at that rate,
  local slots = math.ceil(rate * span / fill)              -- growing 4-fold at most
  open(st, cur.n + 1, math.max(1, math.min(slots, 4 * cur.slots)))
end

local function load(site)
  local st = {meta = prefix .. site, segs = {}, count = 0, last = 0}
  local raw = redis.call('HGETALL', st.meta)
  for i = 1, #raw, 2 do
    if raw[i] == 'c' then
      st.count = tonumber(raw[i + 1])
    else
      local slots, start, stop = string.match(raw[i + 1], '^(%d+):(%d+):(%d+)$')
      local seg = {n = tonumber(raw[i]), slots = tonumber(slots), start = tonumber(start),
                   stop = tonumber(stop), key = st.meta .. ':' .. raw[i] .. ':'}
      st.last = math.max(st.last, seg.n)
      if seg.stop > 0 and seg.stop + ttl + 60 < now then
        redis.call('HDEL', st.meta, raw[i])  -- its slots have expired
      else
        table.insert(st.segs, seg)
        if seg.stop == 0 then st.cur = seg end
      end
    end
  end
  if not st.cur then
    open(st, st.last + 1, 1)
  elseif now - st.cur.start >= span then
    close(st)
  end
  sites[site] = st
  return st
end

for i = 8, #ARGV, 4 do
  local st = sites[ARGV[i]] or load(ARGV[i])
  local fp, idx, tag = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local at = math.floor(tonumber(tag) / seq)
  local mine, recent = false, false
  for _, seg in ipairs(st.segs) do
    local held = redis.call('HGET', seg.key .. (idx % seg.slots), fp)
    if held == tag then
      mine = true
    elseif held and at - math.floor(tonumber(held) / seq) < window then
      recent = true
    end
  end
  if not mine and not recent then
    local key = st.cur.key .. (idx % st.cur.slots)
    st.count = st.count + redis.call('HSET', key, fp, tag)
    touched[key] = true
    -- a slot reaches slot_max before its segment's mean reaches half of it only by chance
    -- (with a mean of 64, P < 1e-12): only then is a slot's size looked at
    if st.count * 2 >= st.cur.slots * slot_max and redis.call('HLEN', key) >= slot_max then
      close(st)
    end
  end
  verdicts[#verdicts + 1] = (recent and not mine) and 1 or 0
end
for key in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for _, st in pairs(sites) do
  redis.call('HSET', st.meta, 'c', st.count)
  redis.call('EXPIRE', st.meta, ttl + span + 60)
end
return verdicts
"""


def fingerprint(message_id: str) -> tuple[int, int]:
    """A messageId's 64-bit fingerprint (signed, as Redis stores integers) and the
    32 bits that pick its slot."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True), int.from_bytes(digest[:4], "big")


def owner_tag(entry_id: str) -> int:
    """An inbox entry id ('ms-seq') as one integer that keeps its time: exact for
    any stream that adds fewer than 4,096 entries in one millisecond."""
    ms, _, seq = entry_id.partition("-")
    return (int(ms) - OWNER_EPOCH_MS) * OWNER_SEQ + int(seq or 0) % OWNER_SEQ


def duplicates(client: redis.Redis, pairs: list[tuple[str, dict]]) -> list[bool]:
    """For (inbox entry id, event) pairs: True for a repeat of a messageId.

    The first entry to claim a messageId owns it; an entry received less than
    48 hours after the owner's is a duplicate. An entry read again after a
    worker died finds its own claims and keeps its events: a crash never
    turns an event into a 'duplicate'. The same messageId twice in one entry
    is a duplicate the second time.
    """
    verdicts: list[bool | None] = []
    args: list = []
    first: set[tuple[int, int, int]] = set()
    for owner, event in pairs:
        fp, idx = fingerprint(event["message"]["messageId"])
        claim = (event["site_id"], fp, owner_tag(owner))
        if claim in first:
            verdicts.append(True)
            continue
        first.add(claim)
        verdicts.append(None)
        args += claim[:2] + (idx, claim[2])
    if args:
        script = client.register_script(_CLAIM)
        head = [DEDUP_PREFIX, DEDUP_SECONDS * 1000, SPAN_SECONDS, SLOT_FILL, SLOT_MAX]
        head += [DEDUP_SECONDS, OWNER_SEQ]
        step = 4 * CHECKS_PER_CALL
        chunks = [head + args[start : start + step] for start in range(0, len(args), step)]
        if len(chunks) == 1:  # a pipeline would ask SCRIPT EXISTS first: one more round trip
            answers = iter(script(args=chunks[0]))
        else:
            with client.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    script(args=chunk, client=pipe)
                answers = iter(a for part in pipe.execute() for a in part)
        verdicts = [bool(next(answers)) if v is None else v for v in verdicts]
    return verdicts


def dedup_key(site_id: int, message_id: str, client: redis.Redis | None = None) -> str | None:
    """The slot that holds the newest claim of `message_id` for the site, or
    None (for inspection and tests)."""
    client = client or queues.redis_client()
    meta = f"{DEDUP_PREFIX}{site_id}"
    fp, idx = fingerprint(message_id)
    found = None
    for n, layout in sorted(
        (int(f), v.decode()) for f, v in client.hgetall(meta).items() if f != b"c"
    ):
        key = f"{meta}:{n}:{idx % int(layout.split(':')[0])}"
        if client.hexists(key, str(fp)):
            found = key
    return found

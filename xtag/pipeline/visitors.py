"""What xtag remembers of visitors across requests, in Redis: per site and
visitor (anonymousId, userId) the latest click id and the hashed traits of
identify calls (30 days), so that later events of the visitor carry them
whatever client sent them. Ids that one event carries together (an identify
or any event with both, an alias's previousId and userId) are linked: each
then reads what the other knows.
Used by the worker as it reads the inbox; the messageIds it has seen are
xtag.pipeline.dedup's.

Visitors: a key per visitor id, a small hash (a listpack): 't', 'e', 'p' (click
id, hashed email, hashed phone) and a field 'l:<digest>' per linked id, about
150 bytes for a visitor from an X ad and 530 for one identified with two ids
(links were sets of their own before: twice that).
"""

from __future__ import annotations

import functools
import hashlib

import redis

MEMORY_SECONDS = 30 * 24 * 3600
TRAIT_FIELDS = ("hashed_email", "hashed_phone_number")  # from identify calls only
REMEMBERED = ("twclid", *TRAIT_FIELDS)
FIELDS = {"twclid": "t", "hashed_email": "e", "hashed_phone_number": "p"}  # names in Redis
LINK = "l:"  # a field 'l:<digest>' links a visitor key to another key of its site
# Links a visitor key takes: a user's devices, an anonymous id's logins. The
# write key is public: without a bound, one anonymousId sent with thousands
# of userIds would merge thousands of visitors' memories, and every event of
# it would have the script read and write them all while Redis serves nobody
# else. Once a key is full its first links stay; an event's own ids are
# still read together.
MAX_LINKS = 32


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def visitor_key(site_id: int, kind: str, value: str) -> str:
    return f"xtag:traits:{site_id}:{_digest(f'{kind}:{value}')}"


def visitor_keys(event: dict) -> list[str]:
    """The event's own visitor keys: its userId's and anonymousId's, and for
    an alias its previousId's (which may have been either)."""
    message, site = event["message"], event["site_id"]
    keys = [
        visitor_key(site, kind, message[field])
        for kind, field in (("user", "userId"), ("anon", "anonymousId"))
        if message.get(field)
    ]
    if message["type"] == "alias" and message.get("previousId"):
        keys += [visitor_key(site, kind, message["previousId"]) for kind in ("user", "anon")]
    return keys


def _remembered(event: dict) -> dict[str, str]:
    found = event["identifiers"]
    kept = {"twclid": found["twclid"]} if found.get("twclid") else {}
    if event["message"]["type"] == "identify":
        kept |= {k: v for k, v in found.items() if k in TRAIT_FIELDS}
    return kept


def _wants(event: dict) -> bool:
    found = event["identifiers"]
    return event["message"]["type"] != "identify" and not all(k in found for k in REMEMBERED)


# One script per read of the inbox (and per batch claimed): a pipeline of a few
# commands per visitor key cost the worker more Python than anything but the
# mapping. ARGV: seconds to keep what is written (0: write nothing), LINK, the
# prefix of the former link sets, the number of fields n, their n short then n
# long names; then per visitor: its key count k, its k keys, 1 if its memory is
# wanted, its count of pairs m and m field/value pairs to remember. Each key's
# linked keys are those stored (fields 'l:<digest>', and the former sets) and
# the keys this call gives with it, up to MAX_LINKS; a visitor's keys are its
# own and those linked to them. Writes come first: every key's new links (a
# key with links is kept 30 days more), then the visitors' pairs
# to all their keys (a later visitor's value of a field wins), one HSET a key.
# Returns per wanted visitor its memory, as field number/value pairs, each
# field the first found in its sorted keys.
_RECALL = """
local ttl, link, sets, nf = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local names = {}
for f = 1, 2 * nf do names[f] = ARGV[4 + f] end
local visitors, linked, involved = {}, {}, {}
local i = 5 + 2 * nf
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local v = {keys = {}, wanted = ARGV[i + n + 1] == '1', kept = {}}
  for j = 1, n do
    local key = ARGV[i + j]
    v.keys[j] = key
    if not linked[key] then
      linked[key] = {}
      involved[#involved + 1] = key
    end
  end
  local m = tonumber(ARGV[i + n + 2])
  for j = 1, 2 * m do v.kept[j] = ARGV[i + n + 2 + j] end
  visitors[#visitors + 1] = v
  i = i + n + 3 + 2 * m
end

local function in_parts(command, key, values)  -- unpack takes a few thousand values at most
  for start = 1, #values, 1000 do
    redis.call(command, key, unpack(values, start, math.min(start + 999, #values)))
  end
end

local counts = {}  -- per key, its links: 'kept' in its hash, else 'new' (to write)
for _, key in ipairs(involved) do
  local head, n, extra = string.match(key, '^(.*):[^:]*$'), 0, {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, #link) ~= link then
    elseif n < MAX_LINKS then
      linked[key][head .. ':' .. string.sub(field, #link + 1)] = 'kept'
      n = n + 1
    else
      extra[#extra + 1] = field  -- linked before there was a bound
    end
  end
  if ttl > 0 then in_parts('HDEL', key, extra) end
  for _, other in ipairs(redis.call('SMEMBERS', sets .. string.match(key, '^[^:]*:[^:]*:(.*)$'))) do
    if not linked[key][other] and n < MAX_LINKS then linked[key][other] = 'new'; n = n + 1 end
  end
  counts[key] = n
end
for _, v in ipairs(visitors) do
  for _, key in ipairs(v.keys) do
    for _, other in ipairs(v.keys) do
      if other ~= key and not linked[key][other] and counts[key] < MAX_LINKS then
        linked[key][other] = 'new'
        counts[key] = counts[key] + 1
      end
    end
  end
end
for _, v in ipairs(visitors) do
  local seen, whole = {}, {}
  for _, key in ipairs(v.keys) do
    if not seen[key] then seen[key] = true; whole[#whole + 1] = key end
    for other in pairs(linked[key]) do
      if not seen[other] then seen[other] = true; whole[#whole + 1] = other end
    end
  end
  if v.wanted then table.sort(whole) end  -- the order its memory is read in
  v.whole = whole
end

local function hset(key, pairs_)
  in_parts('HSET', key, pairs_)
  redis.call('EXPIRE', key, ttl)
end

if ttl > 0 then
  for _, key in ipairs(involved) do
    local fields = {}
    for other, state in pairs(linked[key]) do
      if state == 'new' then
        fields[#fields + 1] = link .. string.match(other, '([^:]*)$')
        fields[#fields + 1] = ''
      end
    end
    if #fields > 0 then hset(key, fields)
    elseif counts[key] > 0 then redis.call('EXPIRE', key, ttl) end
  end
  local fields, written = {}, {}  -- per key, what the visitors give it (the last value wins)
  for _, v in ipairs(visitors) do
    if #v.kept > 0 then
      for _, key in ipairs(v.whole) do
        if not fields[key] then
          fields[key] = {}
          written[#written + 1] = key
        end
        for j = 1, #v.kept, 2 do fields[key][v.kept[j]] = v.kept[j + 1] end
      end
    end
  end
  for _, key in ipairs(written) do
    local flat = {}
    for field, value in pairs(fields[key]) do
      flat[#flat + 1] = field
      flat[#flat + 1] = value
    end
    hset(key, flat)
  end
end

local answers = {}
for _, v in ipairs(visitors) do
  if v.wanted then
    local found, memory = {}, {}
    for _, key in ipairs(v.whole) do
      local values = redis.call('HMGET', key, unpack(names))
      for f = 1, nf do
        local value = values[f] or values[nf + f]
        if value and not found[f] then
          found[f] = true
          memory[#memory + 1] = f
          memory[#memory + 1] = value
        end
      end
    end
    answers[#answers + 1] = memory
  end
end
return answers
""".replace("MAX_LINKS", str(MAX_LINKS))

# Where links were kept before they moved into the visitor's hash: a set per key,
# read until the last of them expires, 30 days after the upgrade.
LINKS_BEFORE = "xtag:links:"


@functools.lru_cache(maxsize=8)  # per client (one per process): its SHA-1 computed once
def _recall_script(client: redis.Redis):
    return client.register_script(_RECALL)


_NAMES = list(FIELDS.values()) + list(FIELDS)  # short names, then the long ones of before
_BY_NUMBER = dict(enumerate(FIELDS, start=1))


def _remember(
    client: redis.Redis, visitors: list[tuple[list[str], bool, dict[str, str]]], keep: bool
) -> list[dict[str, str]]:
    """Run _RECALL for (keys, wanted, to remember) per visitor; the memory of
    each wanted one, by full name."""
    args: list = [MEMORY_SECONDS if keep else 0, LINK, LINKS_BEFORE, len(FIELDS), *_NAMES]
    for keys, wanted, kept in visitors:
        args += [len(keys), *keys, int(wanted), len(kept)]
        for name, value in kept.items():
            args += [FIELDS[name], value]
    answers = _recall_script(client)(args=args)
    return [
        {_BY_NUMBER[number]: value.decode() for number, value in zip(a[::2], a[1::2], strict=True)}
        for a in answers
    ]


def known(client: redis.Redis, visitors: list[list[str]]) -> list[dict[str, str]]:
    """What is remembered of each visitor (given by its keys)."""
    if not visitors:
        return []
    return _remember(client, [(keys, True, {}) for keys in visitors], keep=False)


def recall(client: redis.Redis, events: list[dict]) -> None:
    """Remember what each event tells of its visitor, link the ids it carries
    together, then complete every event's missing identifiers from what is
    known of its visitor (this read's events included, whatever their order)."""
    own = [visitor_keys(e) for e in events]
    wanting = [bool(keys) and _wants(e) for e, keys in zip(events, own, strict=True)]
    visitors = [
        (keys, wants, _remembered(e)) for e, keys, wants in zip(events, own, wanting, strict=True)
    ]
    memories = iter(_remember(client, visitors, keep=True))
    for event, wants in zip(events, wanting, strict=True):
        if not wants:
            continue
        for name, value in next(memories).items():
            if name not in event["identifiers"]:
                event["identifiers"][name] = value
                event.setdefault("sources", {})[name] = "memory"

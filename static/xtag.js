/*! xtag.js, the xtag site beacon (see the README). In <head>, with your collector URL and write key:
<script>
!function(w,d,u,k){var x=w.xtag=w.xtag||[];if(x.u)return;x.u=u;x.k=k;["track","page","identify","reset"].forEach(function(m){x[m]=function(){x.push([m].concat([].slice.call(arguments)))}});var s=d.createElement("script");s.async=1;s.src=u+"/static/xtag.js";d.head.appendChild(s)}(window,document,"https://collect.example.com","WRITE_KEY");
</script> */
(function (w, d) {
  var x = w.xtag, L = location, n = navigator, buf = [], k, i;
  if (!x || x.load) return;
  x.load = 1;
  var base = String(x.u).replace(/\/+$/, "");

  function dec(s) { try { return decodeURIComponent(s); } catch (e) { return s; } }
  function obj(v) { return v && typeof v == "object" ? v : {}; }
  function cookie(name, v, days) {
    if (v == null) return (v = d.cookie.match("(^|; )" + name + "=([^;]*)")) && dec(v[2]);
    d.cookie = name + "=" + encodeURIComponent(v) + "; Max-Age=" + days * 86400 +
      "; path=/; SameSite=Lax" + (L.protocol == "https:" ? "; Secure" : "");
  }
  function store(v) {
    try {
      if (v === 0) return localStorage.getItem("_xtag_uid");
      v ? localStorage.setItem("_xtag_uid", v) : localStorage.removeItem("_xtag_uid");
    } catch (e) {}
  }
  function uuid() {
    var c = w.crypto;
    return c.randomUUID ? c.randomUUID() : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (h) {
      return (h ^ c.getRandomValues(new Uint8Array(1))[0] & 15 >> h / 4).toString(16);
    });
  }
  function twclid() {
    var t = L.search.match(/[?&]twclid=([^&]+)/);
    if (t) cookie("_xtag_twclid", t = dec(t[1]), 30);
    return t || cookie("_xtag_twclid");
  }
  var aid = cookie("_xtag_aid") || uuid(), uid = store(0);
  cookie("_xtag_aid", aid, 365);

  function send(list) {
    if (!list[0]) return;
    var body = list[1] ? { batch: list } : list[0], url = base + "/v1/" + (list[1] ? "batch" : body.type), json;
    body.writeKey = x.k;
    json = JSON.stringify(body);
    try { if (n.sendBeacon(url, new Blob([json], { type: "text/plain" }))) return; } catch (e) {}
    fetch(url, { method: "POST", body: json, keepalive: json.length < 6e4, credentials: "include",
      headers: { "Content-Type": "text/plain" } }).catch(function () {});
  }
  // originalTimestamp + sentAt, not timestamp: the collector corrects a wrong clock.
  function out(type, m) {
    var t = twclid(), c = m.context = { userAgent: n.userAgent, library: { name: "xtag.js", version: "1.1.0" },
      page: { url: L.href.split("#")[0], path: L.pathname, referrer: d.referrer, title: d.title } };
    if (t) c.twclid = t;
    if (x.consent) c.consent = x.consent;
    if (uid) m.userId = uid;
    m.type = type;
    m.messageId = uuid();
    m.anonymousId = aid;
    m.originalTimestamp = m.sentAt = new Date().toISOString();
    buf ? buf.push(m) : send([m]);
    if (type == "track") pixel(m);
  }
  // The site's X pixel script (empty unless it has one) takes each track message.
  function pixel(m) {
    if (!x.pixel) {
      x.pixel = [];
      var s = d.createElement("script");
      s.async = 1;
      s.src = base + "/v1/pixel.js?writeKey=" + encodeURIComponent(x.k);
      d.head.appendChild(s);
    }
    x.pixel.push(m);
  }

  var api = {
    track: function (event, props) { out("track", { event: String(event), properties: obj(props) }); },
    page: function (name, props) {
      if (name && typeof name == "object") props = name, name = 0;
      var m = { properties: obj(props) };
      if (name) m.name = String(name);
      out("page", m);
    },
    identify: function (id, traits) {
      if (id && typeof id == "object") traits = id, id = null;
      if (id != null && id !== "") store(uid = String(id));
      out("identify", { traits: obj(traits) });
    },
    reset: function () {
      store(uid = null);
      cookie("_xtag_aid", aid = uuid(), 365);
    }
  };
  function call(c) { try { api[c[0]].apply(x, c.slice(1)); } catch (e) {} }

  var queued = x.splice(0, x.length);
  for (k in api) x[k] = api[k];
  x.push = call;
  if (x.autoPage !== false) api.page();
  for (i in queued) call(queued[i]);
  send(buf);
  buf = null;
})(window, document);

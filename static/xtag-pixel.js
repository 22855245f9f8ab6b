/*! xtag-pixel.js: fires the site's X pixel for the track events xtag forwards to X,
with the conversion id the server sends, so X counts each conversion once. The
collector serves it at /v1/pixel.js?writeKey=K with the site's settings as the
last argument below; xtag.js loads it and hands it each track message. Its rules
are the server's (xtag/core/events.py consent, xtag/core/mapping.py conversion_id):
when unsure, it fires nothing, as the server's conversion is counted anyway. */
(function (w, d, n, config) {
  var x = w.xtag;
  if (!x || x.pixel && x.pixel.hook) return;
  var ADVERTISING = ["advertising", "ads", "marketing", "targeting", "ad_storage", "ad_user_data"];
  var DENIED = ["denied", "deny", "false", "no", "0", "off", "rejected"];
  var GRANTED = ["granted", "grant", "true", "yes", "1", "on", "accepted"];
  // Python's str.strip() whitespace, which differs from JavaScript's \s
  var SPACE = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
  var TRIM = new RegExp("^" + SPACE + "+|" + SPACE + "+$", "g");
  var TEXT_MAX = 500;

  function own(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  function isObject(v) { return v !== null && typeof v == "object"; }
  function advertising(k) { return ADVERTISING.indexOf(String(k).toLowerCase()) >= 0; }

  function flag(v) {
    if (typeof v == "boolean") return v;
    if (typeof v == "string") {
      v = v.trim().toLowerCase();
      if (DENIED.indexOf(v) >= 0) return false;
      if (GRANTED.indexOf(v) >= 0) return true;
    }
    return null;
  }

  // "denied", "granted" or null for advertising use, from the message's context
  function consent(context) {
    var raw = context.consent, managed = context.consentManagement, verdicts = [];
    if (isObject(raw) && !Array.isArray(raw)) {
      var prefs = raw.categoryPreferences;
      [isObject(prefs) && !Array.isArray(prefs) ? prefs : {}, raw].forEach(function (source) {
        for (var k in source) if (own(source, k) && advertising(k)) verdicts.push(flag(source[k]));
      });
    } else if (raw != null) {
      verdicts.push(flag(raw));
    }
    if (isObject(managed) && !Array.isArray(managed)) {
      [["deniedConsentIds", false], ["allowedConsentIds", true]].forEach(function (pair) {
        var ids = managed[pair[0]];
        if (Array.isArray(ids) && ids.some(advertising)) verdicts.push(pair[1]);
      });
    }
    if (verdicts.indexOf(false) >= 0) return "denied";
    if (verdicts.indexOf(true) >= 0) return "granted";
    return null;
  }

  // a value at a dotted path, as the server resolves it
  function resolve(v, path) {
    path.split(".").forEach(function (part) {
      if (Array.isArray(v)) v = /^[0-9]+$/.test(part) && +part < v.length ? v[+part] : null;
      else v = isObject(v) && own(v, part) ? v[part] : null;
    });
    return v;
  }

  // the server's text(): no booleans, objects or arrays; trimmed; at most 500 characters
  function text(v) {
    if (v == null || typeof v == "boolean" || isObject(v)) return null;
    if (typeof v == "number" && v % 1 && Math.abs(v) < 1e-4) return null; // Python writes 1e-05
    v = Array.from(String(v).replace(TRIM, "")).slice(0, TEXT_MAX).join("");
    return v || null;
  }

  // Python's truth: 0, false, "", null, [] and {} are false
  function truthy(v) {
    return isObject(v) ? Object.keys(v).length > 0 : !!v;
  }

  function conversionId(m, path) {
    if (path) return text(resolve(m, path));
    var props = isObject(m.properties) ? m.properties : {}, first = null;
    ["conversion_id", "order_id"].some(function (k) {
      return props[k] != null && props[k] !== "" && (first = props[k], true);
    });
    return text(truthy(first) ? first : m.messageId);
  }

  // X's base code, unless the page already runs X's pixel
  function twq() {
    if (!w.twq) {
      var s = w.twq = function () {
        s.exe ? s.exe.apply(s, arguments) : s.queue.push(arguments);
      };
      s.version = "1.1";
      s.queue = [];
      var u = d.createElement("script");
      u.async = true;
      u.src = "https://static.ads-twitter.com/uwt.js";
      d.head.appendChild(u);
      w.twq("config", config.pixel_id);
    }
    return w.twq;
  }

  function hook(m) {
    if (n.globalPrivacyControl === true) return;
    m = JSON.parse(JSON.stringify(m)); // the message exactly as the server reads it
    var context = isObject(m.context) ? m.context : {}, state = consent(context);
    if (state == "denied" || (config.require_consent && state != "granted")) return;
    config.rules.forEach(function (rule) {
      if (rule.event !== m.event) return;
      var id = conversionId(m, rule.conversion_id);
      // the server hashes emails and rewrites URL queries: then the ids would differ
      if (id == null || /@|%40/i.test(id) || /:\/\/.*\?/.test(id)) return;
      twq()("event", rule.event_id, { conversion_id: id });
    });
  }

  var queued = x.pixel || [];
  x.pixel = { push: function (m) { try { hook(m); } catch (e) {} }, hook: 1 };
  queued.forEach(x.pixel.push);
})(window, document, navigator, XTAG_PIXEL_CONFIG);

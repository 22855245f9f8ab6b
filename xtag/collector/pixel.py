"""GET /v1/pixel.js?writeKey=K: the site's X pixel script
(xtag.services.pixelscripts), which xtag.js loads on a page's first track
call. Cacheable for a minute."""

from __future__ import annotations

from flask import Response, request

from xtag.collector.views import bp, check_origin, refusal, site_for, write_key
from xtag.core.messages import Rejected
from xtag.services import pixelscripts

MAX_AGE = 60  # seconds a browser keeps it: a site put in test mode stops firing soon after


# The write key in the query, which the request log never records
@bp.route("/v1/pixel.js", methods=["GET"])
def pixel_script():
    try:
        site = site_for(write_key())
        check_origin(site)
    except Rejected as exc:
        return refusal(str(exc), exc.code)
    response = Response(pixelscripts.script(site.id), mimetype="application/javascript")
    response.cache_control.public = True
    response.cache_control.max_age = MAX_AGE
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.add_etag()
    return response.make_conditional(request)

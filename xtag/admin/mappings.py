"""Admin pages for a site's pixels and mappings, with a preview that follows
the mapping as it is typed (htmx) and works as a plain form without it."""

from __future__ import annotations

import json

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from xtag.admin.base import ActionForm, bp, errors_into, row_or_404
from xtag.core.errors import Invalid
from xtag.core.fields import ID_MAX
from xtag.extensions import db
from xtag.models import Connection, Mapping, Pixel, ReceivedEvent, Site
from xtag.services import changes
from xtag.services.preview import draft, preview
from xtag.services.resources import MAPPINGS, PIXELS


class MappingForm(FlaskForm):
    event_name = StringField("Incoming event name (page views: page)")
    pixel = SelectField("Pixel", coerce=int)
    x_event_id = StringField("X event id (o87ne or tw-<pixel>-<event>)")
    description = StringField("Description sent to X", validators=[Optional()])
    fields = TextAreaField(
        "Field overrides, one per line: value=properties.total", validators=[Optional()]
    )
    enabled = BooleanField("Enabled", default=True)

    def for_pixels(self, pixels: list[Pixel]) -> MappingForm:
        self.pixel.choices = [SelectChoice(p.id, f"{p.pixel_id} {p.name}") for p in pixels]
        return self

    def fill(self, row: Mapping) -> None:
        self.event_name.data, self.pixel.data = row.event_name, row.pixel_key
        self.x_event_id.data, self.description.data = row.x_event_id, row.description
        self.fields.data = "\n".join(f"{k}={v}" for k, v in (row.fields or {}).items())
        self.enabled.data = row.enabled

    def data_for_service(self, site_id: int, editing: bool = False) -> dict:
        """New mappings start enabled; the edit page has the checkbox."""
        overrides = {}
        for line in (self.fields.data or "").splitlines():
            name, _, path = line.partition("=")
            if name.strip():
                overrides[name.strip()] = path.strip()
        return {
            "site_id": site_id,
            "event_name": self.event_name.data or "",
            "pixel": self.pixel.data,
            "x_event_id": self.x_event_id.data or "",
            "description": (self.description.data or "").strip() or None,
            "fields": overrides,
            **({"enabled": bool(self.enabled.data)} if editing else {}),
        }


class PixelForm(FlaskForm):
    pixel_id = StringField("X pixel id")
    name = StringField("Name", validators=[Optional()])
    connection_id = SelectField("Connection", coerce=int)

    def for_connections(self) -> PixelForm:
        connections = db.session.scalars(select(Connection).order_by(Connection.name)).all()
        self.connection_id.choices = [SelectChoice(c.id, c.name) for c in connections]
        return self

    def data_for_service(self) -> dict:
        return {
            "pixel_id": self.pixel_id.data or "",
            "name": self.name.data or "",
            "connection_id": self.connection_id.data,
        }


class PreviewForm(FlaskForm):
    message = TextAreaField("A Segment message (JSON)")


def _pixels() -> list[Pixel]:
    return db.session.scalars(select(Pixel).order_by(Pixel.pixel_id)).all()


def _sample(site: Site, event_name: str | None = None) -> str:
    """The latest real event of that name (else of any mapped name), as a
    message to preview; a made-up one when there is none yet."""
    names = (
        [event_name] if event_name else select(Mapping.event_name).where(Mapping.site_id == site.id)
    )
    row = db.session.scalar(
        select(ReceivedEvent)
        .where(
            ReceivedEvent.site_id == site.id,
            ReceivedEvent.event_name.in_(names),
            ReceivedEvent.test.is_(False),  # a test event from the admin is not a real one
        )
        .order_by(ReceivedEvent.id.desc())
    )
    made_up = {"event": event_name or "Order Completed", "anonymousId": "a-1"}
    message = dict(row.message) if row else made_up
    if row:  # what the collector took from the request itself, back where a site puts it
        ids = row.identifiers
        context = {"twclid": ids.get("twclid"), "ip": ids.get("ip_address")}
        context["userAgent"] = ids.get("user_agent")
        message["context"] = {
            **(message.get("context") or {}),
            **{k: v for k, v in context.items() if v},
        }
    return json.dumps(message, indent=2)


def _preview(site: Site, text: str, drafted: Mapping | None, editing: Mapping | None) -> dict:
    try:
        message = json.loads(text or "")
    except (ValueError, RecursionError):
        raise Invalid("the message is not valid JSON", "message") from None
    return preview(site, message, drafted, editing)


def _page(site: Site, form: MappingForm, preview_form: PreviewForm, **context):
    return render_template(
        "admin/mapping.html" if context.get("editing") else "admin/mappings.html",
        site=site,
        form=form,
        preview_form=preview_form,
        action_form=ActionForm(),
        **context,
    )


@bp.route("/sites/<int:site_id>/mappings", methods=["GET", "POST"])
@login_required
def mappings(site_id: int):
    site = row_or_404(Site, site_id)
    pixels = _pixels()
    form = MappingForm(prefix="m").for_pixels(pixels)
    pixel_form, preview_form = PixelForm(prefix="p").for_connections(), PreviewForm(prefix="v")
    result = None
    action = request.form.get("action")
    if request.method == "POST" and not FlaskForm().validate():
        abort(400)
    try:
        if action == "mapping" and form.validate():
            changes.create(MAPPINGS, current_user, form.data_for_service(site.id))
            flash("Mapping added.", "ok")
            return redirect(url_for("admin.mappings", site_id=site.id))
        if action == "pixel" and pixel_form.validate():
            changes.create(PIXELS, current_user, pixel_form.data_for_service())
            flash("Pixel added.", "ok")
            return redirect(url_for("admin.mappings", site_id=site.id))
        if action == "preview" and preview_form.validate():
            result = _preview(site, preview_form.message.data, None, None)
    except Invalid as exc:
        errors_into({"mapping": form, "pixel": pixel_form, "preview": preview_form}[action], exc)
    if not preview_form.message.data:
        preview_form.message.data = _sample(site)
    rows = db.session.scalars(
        select(Mapping).where(Mapping.site_id == site.id).order_by(Mapping.event_name)
    ).all()
    recent = db.session.scalars(
        select(ReceivedEvent.event_name)
        .where(ReceivedEvent.site_id == site.id, ReceivedEvent.event_name.is_not(None))
        .distinct()
        .limit(50)
    ).all()
    return _page(
        site,
        form,
        preview_form,
        mappings=rows,
        pixel_form=pixel_form,
        result=result,
        suggestions=sorted(set(recent) - {m.event_name for m in rows}),
        pixels=pixels,
        has_connections=bool(pixel_form.connection_id.choices),
    )


@bp.route("/mappings/<int:mapping_id>", methods=["GET", "POST"])
@login_required
def mapping_edit(mapping_id: int):
    row = row_or_404(Mapping, mapping_id)
    form = MappingForm(prefix="m").for_pixels(_pixels())
    preview_form = PreviewForm(prefix="v")
    if request.method == "GET":
        form.fill(row)
    elif form.validate_on_submit():
        try:
            data = form.data_for_service(row.site_id, editing=True)
            changes.update(MAPPINGS, current_user, row, data)
            flash("Mapping saved.", "ok")
            return redirect(url_for("admin.mappings", site_id=row.site_id))
        except Invalid as exc:
            errors_into(form, exc)
    elif request.method == "POST":
        abort(400)
    preview_form.message.data = _sample(row.site, row.event_name)
    return _page(row.site, form, preview_form, editing=row)


@bp.route("/sites/<int:site_id>/preview", methods=["POST"])
@login_required
def live_preview(site_id: int):
    """The preview panel for htmx: the message as the typed mapping would
    make it (in place of the mapping being edited, if any)."""
    site = row_or_404(Site, site_id)
    form = MappingForm(prefix="m").for_pixels(_pixels())
    preview_form = PreviewForm(prefix="v")
    if not FlaskForm().validate():  # the CSRF token; the draft may be half typed
        abort(400)
    editing = None
    if request.form.get("mapping_id", "").isdigit() and int(request.form["mapping_id"]) <= ID_MAX:
        editing = db.session.get(Mapping, int(request.form["mapping_id"]))
    drafted = draft_error = message_error = result = None
    if (form.event_name.data or "").strip():
        try:
            drafted = draft(form.data_for_service(site.id), editing)
        except Invalid as exc:
            draft_error = exc.message
    try:
        result = _preview(site, preview_form.message.data, drafted, editing)
    except Invalid as exc:
        message_error = exc.message
    return render_template(
        "admin/_preview.html", result=result, draft_error=draft_error, message_error=message_error
    )


@bp.route("/sites/<int:site_id>/sample")
@login_required
def sample(site_id: int):
    """The latest real event of a name, for the preview's message box (htmx)."""
    site = row_or_404(Site, site_id)
    preview_form = PreviewForm(prefix="v")
    preview_form.message.data = _sample(site, request.args.get("m-event_name", "").strip())
    return render_template("admin/_preview_message.html", preview_form=preview_form, site=site)


@bp.route("/mappings/<int:mapping_id>/<any(toggle, delete):change>", methods=["POST"])
@login_required
def mapping_change(mapping_id: int, change: str):
    row = row_or_404(Mapping, mapping_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    site_id = row.site_id
    if change == "toggle":
        changes.update(MAPPINGS, current_user, row, {"enabled": not row.enabled})
    else:
        changes.delete(MAPPINGS, current_user, row)
    return redirect(url_for("admin.mappings", site_id=site_id))


def _back(site_id: int | None) -> str:
    """Pixels are shared by sites: back to the site's mappings it came from."""
    return url_for("admin.mappings", site_id=site_id) if site_id else url_for("admin.sites")


@bp.route("/pixels/<int:pixel_id>", methods=["GET", "POST"])
@login_required
def pixel_edit(pixel_id: int):
    row = row_or_404(Pixel, pixel_id)
    form = PixelForm(obj=None if request.method == "POST" else row).for_connections()
    back = request.values.get("site_id", type=int)
    if form.validate_on_submit():
        try:
            changes.update(PIXELS, current_user, row, form.data_for_service())
            flash(f"Pixel {row.pixel_id} saved.", "ok")
            return redirect(
                url_for("admin.mappings", site_id=back) if back else url_for("admin.sites")
            )
        except Invalid as exc:
            errors_into(form, exc)
    elif request.method == "POST":
        abort(400)
    mapped = db.session.scalar(select(func.count(Mapping.id)).where(Mapping.pixel_key == row.id))
    return render_template(
        "admin/pixel.html", pixel=row, form=form, action_form=ActionForm(), mapped=mapped, back=back
    )


@bp.route("/pixels/<int:pixel_id>/delete", methods=["POST"])
@login_required
def pixel_delete(pixel_id: int):
    row = row_or_404(Pixel, pixel_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    back = request.values.get("site_id", type=int)
    changes.delete(PIXELS, current_user, row)
    flash(f"Pixel {row.pixel_id} deleted, with its mappings and deliveries.", "ok")
    return redirect(_back(back))

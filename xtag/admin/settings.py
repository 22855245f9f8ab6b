"""Install-wide settings (admins): the alert webhook, set, replaced or
cleared back to XTAG_ALERT_WEBHOOK_URL; and the open alerts, which any
admin page can show with the `admin/_alerts.html` partial."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired

from xtag.admin.base import ActionForm, admin_only, bp, errors_into
from xtag.core.errors import Invalid
from xtag.pipeline import alerts
from xtag.services import settings as settings_service


class WebhookForm(FlaskForm):
    # a password field: the browser never gets the stored URL back to show
    alert_webhook_url = PasswordField("Alert webhook URL", validators=[DataRequired()])


@bp.context_processor
def _current_alerts():
    """`current_alerts()` for the alerts partial, read only where it is shown."""
    return {"current_alerts": lambda: [alerts.as_json(a) for a in alerts.current()]}


def _page(form: WebhookForm):
    return render_template(
        "admin/settings.html",
        settings=settings_service.read(),
        form=form,
        clear_form=ActionForm(),
    )


@bp.route("/settings", methods=["GET", "POST"])
@login_required
@admin_only
def settings():
    form = WebhookForm()
    if form.validate_on_submit():
        try:
            settings_service.update(
                current_user, {"alert_webhook_url": form.alert_webhook_url.data}
            )
        except Invalid as exc:
            errors_into(form, exc)
        else:
            flash("Alert webhook saved. It is stored encrypted and shown masked.", "ok")
            return redirect(url_for("admin.settings"))
    return _page(form)


@bp.route("/settings/clear-webhook", methods=["POST"])
@login_required
@admin_only
def settings_clear_webhook():
    if not ActionForm().validate_on_submit():
        abort(400)
    settings_service.update(current_user, {"alert_webhook_url": None})
    flash("Alert webhook cleared: XTAG_ALERT_WEBHOOK_URL applies, if it is set.", "ok")
    return redirect(url_for("admin.settings"))

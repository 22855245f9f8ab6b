"""test mode, match quality, replays, alerts and settings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites") as batch_op:
        batch_op.add_column(
            sa.Column("test_mode", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("x_pixel_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("silence_alert_hours", sa.Float(), nullable=True))
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.add_column(
            sa.Column("test", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("delivery_items") as batch_op:
        batch_op.add_column(
            sa.Column("test", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("match", sa.Integer(), nullable=True))
        # an order id may be 500 characters (core.mapping.TEXT_MAX): 200 set it aside
        batch_op.alter_column(
            "conversion_id", type_=sa.String(length=500), existing_type=sa.String(length=200)
        )
        batch_op.create_index("ix_delivery_items_pixel_created", ["pixel_key", "created_at"])
        batch_op.create_index("ix_delivery_items_pixel_conversion", ["pixel_key", "conversion_id"])
    op.create_table(
        "replays",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "site_id", sa.Integer(), sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_name", sa.String(length=200), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("conversions", sa.JSON(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("older_than_48h", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_alerts_open", "alerts", ["ended_at", "kind", "subject"])
    op.create_table(
        "settings",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value_encrypted", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("settings")
    op.drop_index("ix_alerts_open", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("replays")
    with op.batch_alter_table("delivery_items") as batch_op:
        batch_op.drop_index("ix_delivery_items_pixel_conversion")
        batch_op.drop_index("ix_delivery_items_pixel_created")
        batch_op.alter_column(
            "conversion_id", type_=sa.String(length=200), existing_type=sa.String(length=500)
        )
        batch_op.drop_column("match")
        batch_op.drop_column("test")
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.drop_column("test")
    with op.batch_alter_table("sites") as batch_op:
        batch_op.drop_column("silence_alert_hours")
        batch_op.drop_column("x_pixel_id")
        batch_op.drop_column("test_mode")

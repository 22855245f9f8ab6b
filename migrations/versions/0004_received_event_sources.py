"""where each identifier of a received event came from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:50:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.add_column(sa.Column("sources", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.drop_column("sources")

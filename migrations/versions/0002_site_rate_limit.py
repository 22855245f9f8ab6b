"""per-site collector rate limit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites") as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("sites") as batch_op:
        batch_op.drop_column("rate_limit")

"""late binding: what completes a waiting conversion's identifiers

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:40:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("delivery_items") as batch_op:
        batch_op.add_column(sa.Column("visitor", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("delivery_items") as batch_op:
        batch_op.drop_column("visitor")

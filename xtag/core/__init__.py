"""Pure rules: plain data in, plain data out (identity, mapping, messages,
X's answers, times, fields and checks). May import the standard library and
small pure packages only: never Flask, SQLAlchemy, RQ, Redis or another
xtag package."""

from xtag import create_app

app = create_app()

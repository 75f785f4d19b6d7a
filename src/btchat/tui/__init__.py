"""``btchat tui``: the terminal front end, a client of the local API like the web app.

``app.py`` is the Textual application (conversation list, conversation, input line,
screens for requests, adding a contact and file transfers), ``text.py`` turns other
people's text into Rich ``Text`` that is shown and never obeyed, ``launch.py`` finds the
running daemon or starts one in the background.
"""

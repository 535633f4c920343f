"""Methods as a researcher picks them, by one name (`method: fjord`): one module each, holding
what the method sets, its knobs and its requirements (base.py). No torch here."""

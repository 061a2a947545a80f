"""Small documents with one clear answer, shared by the search tests."""

QUERY = "how do I factory reset the router"
TOPICS = {
    "router.txt": "Hold the router's reset button for ten seconds to restore the factory settings.",
    "modem.txt": "The modem's lights show the line status; a red light means no connection.",
    "bread.md": "Feed the sourdough starter every morning with rye flour and lukewarm water.",
    "plants.md": "Ferns want moist soil, while cacti should dry out between waterings.",
    "bike.txt": "Replace a bicycle inner tube with two tyre levers and a pump.",
    "tea.txt": "Green tea brews best at eighty degrees for two minutes.",
    "train.txt": "The night train to Vienna leaves at ten and has sleeping cars.",
    "chess.txt": "Castling moves the king two squares towards a rook.",
}

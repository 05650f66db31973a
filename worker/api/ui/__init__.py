"""The results pages for people: server-rendered HTML with inline SVG charts."""

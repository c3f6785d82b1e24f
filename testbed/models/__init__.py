"""Scripted model server speaking OpenAI Chat Completions, OpenAI Responses and
Anthropic Messages; see README.md for the script format."""

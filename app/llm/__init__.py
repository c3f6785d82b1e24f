"""Model clients over httpx (no vendor SDKs), prices and metering; routing decisions are
`app.core.routing`. Import what you need from its modules (`app.llm.catalog`, `.client`,
`.config`, `.errors`, `.prices`, `.retry`, `.types`, `.meter`).
"""

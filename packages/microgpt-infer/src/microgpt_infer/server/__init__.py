"""microGPT's OpenAI-compatible HTTP server (`serve`; needs the `serve` extra: starlette, uvicorn, jinja2).

    app.py        `create_app(model, ...) -> Starlette`: the endpoints over one `engine.Engine`
    schema.py     request bodies read and checked; `RequestError`, OpenAI's error body
    choices.py    a request's choices as engine requests; their text, stop strings, seeds
    responses.py  OpenAI's response, chunk and log-probability shapes
    metrics.py    Prometheus text for /metrics
    cli.py        the `serve` command

Nothing outside this package imports it: `import microgpt_infer` needs none of the extra.
"""

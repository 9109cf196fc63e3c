"""The request pipeline, one module per stage::

    validate -> cache -> dedup -> orchestrate -> execute -> process
    (select is part of validate: the candidates are chosen with the request)

Each stage is a set of plain functions over the engine's shared state
(:class:`~llmrelay._engine.Engine`) and the call's own object
(:class:`~llmrelay._pipeline.call.Prepared`). A plain call and a stream are two
compositions of the same stages: :meth:`Engine.chat` runs them in order;
:mod:`llmrelay._pipeline.stream` runs validate, the cache lookup, orchestrate and
execute with a stream's own head-of-stream attempt, then process and store on the
accumulated reply. Middleware wraps everything after validate.
"""

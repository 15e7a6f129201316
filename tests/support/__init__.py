"""What tests and benchmarks import to build their worlds; one concept a module.

- ``factories``: what tests create: model sources (``TINY_MODEL``, ``TINY_CNN``), the user's
  token, run bodies, epoch summaries, job rows with their tokens, worker job specs, executor
  submissions, and a finished run (three generations, decisions, a report) in the database.
- ``fake_executor``: ``FakeExecutor``, the one executor double (records submissions, starts
  nothing); the agent tests and the decision-latency benchmark play the worker themselves.
- ``fake_api``: ``FakeApi``, the worker's five endpoints in a real HTTP server, and a worker
  pointed at it (in this process or as ``python -m worker``).
- ``bedrock``: Claude on Bedrock scripted with a botocore ``Stubber``, and what it says.
- ``stack``: an embedded control plane for end-to-end tests, waiting for a run's status.
- ``users``: bearer headers, users and an admin made through the API's token endpoint.
- ``postgres``: scratch databases and whether the server answers (tests' and benchmarks').
- ``moto``: fake AWS credentials, an in-process moto or a ``moto_server`` process with the
  gradpilot stack deployed, settings for the ``batch`` executor on it.
- ``ports``: a free loopback port, waiting until one listens.
- ``processes``: waiting until a child process serves HTTP, stopping one for good.
- ``chromium``: headless Chromium over the DevTools protocol (the dashboard's browser test).
- ``paths``: the repository's root and its example models.

Fixtures stay in the ``conftest.py`` nearest to the tests that share them: ``tests/conftest.py``
(settings, SQLite and Postgres databases, the in-process API, the moto server; it marks every
test that reaches Postgres ``postgres``), ``tests/worker`` and ``tests/confinement`` (a started
``FakeApi``, from ``fake_api.serving``), ``tests/advisors`` (fake AWS credentials),
``tests/auth`` (users), ``tests/cli``, ``tests/web`` and ``tests/e2e``. Test modules never
import from each other or from a conftest.

Nothing here imports pytest at module level except ``fake_api``, so that benchmarks, which
run outside pytest, can use the rest.
"""

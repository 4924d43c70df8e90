"""sfn-pauser's command-line client, for CI pipelines and operators.

It switches maintenance on and off, shows the status, resumes or aborts held
executions and reads the audit trail, through the REST API, with every request
signed with SigV4 from botocore's standard credential chain. It needs only the
standard library and botocore. See docs/ci.md.
"""

__version__ = "0.1.0"

"""DR test reports a committee can read: data model, SVG charts, HTML/Markdown/JSON renderers,
the ``report dr`` command, the scheduled job and the read-only ``/reports/`` pages."""

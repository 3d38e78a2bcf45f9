"""Labels from people: label files read and validated (``labels``), and Label Studio's formats
and REST client (``labelstudio``). Pushing and pulling a run's rounds is ``raysal.run.labelstudio_sync``.
"""

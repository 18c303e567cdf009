"""What every process shares and nothing in it does I/O of its own: settings, errors, the job
model and its validation, decoding, mapping, templates, the wire format of a task's messages."""

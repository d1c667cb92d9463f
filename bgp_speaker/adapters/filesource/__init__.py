"""The file source: EIPs from a YAML or JSON file, followed live with inotify."""

from bgp_speaker.adapters.filesource.parsing import EntryMemo, parse
from bgp_speaker.adapters.filesource.watching import CONFIGMAP_DATA_LINK, FileSource, load_file

__all__ = ["CONFIGMAP_DATA_LINK", "EntryMemo", "FileSource", "load_file", "parse"]

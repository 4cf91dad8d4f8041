"""Commands that read results files: inspect, status, merge, report, export."""

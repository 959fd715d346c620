"""Suite report generators (installed as ptbench.reports). A suite names one with its
`report = "ptbench.reports.NAME:write_report"` key; the plugin registry never imports them."""

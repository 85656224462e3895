"""Plans and analyses as people read them: terminal summaries and tables (summary), the HTML/Markdown report
(report) and charts written as files (charts)."""

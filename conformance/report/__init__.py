"""Reports of a conformance run: the results model and the reporters (HTML
self-assessment, JSON summary, JUnit XML, Allure labels) that consume it."""

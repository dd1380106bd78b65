// QTest: being written.

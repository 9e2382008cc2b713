module gow

go 1.19
